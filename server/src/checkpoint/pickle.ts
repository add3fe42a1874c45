/**
 * A small, strict unpickler for the subset of the pickle protocol (0–5 opcodes up to protocol 2,
 * plus the framing/memo opcodes of 4 and 5) that `torch.save` emits.
 *
 * Loading a pickle normally means executing arbitrary Python callables named by the file. This VM
 * executes nothing: every GLOBAL is looked up in an allowlist supplied by the caller, and anything
 * not in it is refused with a PickleError, so a malicious checkpoint cannot do more than fail to
 * load. Python values map to JS values as follows: None → null, bool → boolean, int → number (or
 * bigint beyond 2^53), float → number, str → string, bytes → Uint8Array, list/tuple → array,
 * dict → Map.
 */

export class PickleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PickleError';
  }
}

/** A Python global that the caller has allowed. `call` implements REDUCE (`f(*args)`); a global
 *  without `call` may only be used as a value (e.g. a storage type passed to persistent_load). */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly call?: (args: unknown[]) => unknown,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Objects the allowlisted callables return may accept BUILD (`__setstate__`) by implementing this. */
export interface PickleBuildable {
  pickleBuild(state: unknown): void;
}

export interface UnpickleOptions {
  /** Returns the allowed global or throws/returns undefined to refuse it. */
  resolveGlobal(module: string, name: string): PickleGlobal | undefined;
  /** Implements BINPERSID/PERSID; without it persistent ids are refused. */
  persistentLoad?(pid: unknown): unknown;
}

/** Python's dict subclass state set by BUILD (e.g. the `_metadata` attribute torch attaches to
 *  state_dict OrderedDicts) is kept here, apart from the items. */
export const DICT_ATTRIBUTES = Symbol('pickle-dict-attributes');
export type PickleDict = Map<unknown, unknown> & { [DICT_ATTRIBUTES]?: unknown };

function isBuildable(x: unknown): x is PickleBuildable {
  return typeof x === 'object' && x !== null && typeof (x as PickleBuildable).pickleBuild === 'function';
}

/** Map keys: Python compares tuple keys by value, so tuples become a canonical string key. */
function dictKey(k: unknown): unknown {
  if (Array.isArray(k)) return JSON.stringify(k, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  return k;
}

export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const need = (n: number): void => {
    if (pos + n > buf.length) throw new PickleError(`pickle is truncated at byte ${pos}`);
  };
  const u8 = (): number => {
    need(1);
    return buf[pos++];
  };
  const u16 = (): number => {
    need(2);
    const v = buf.readUInt16LE(pos);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = buf.readInt32LE(pos);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError('pickle length field is too large');
    return Number(v);
  };
  const bytes = (n: number): Buffer => {
    need(n);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) throw new PickleError(`pickle is truncated: unterminated text line at byte ${pos}`);
    const s = buf.toString('latin1', pos, end);
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw new PickleError(`pickle stack underflow at byte ${pos}`);
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleError(`pickle stack underflow at byte ${pos}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) throw new PickleError(`pickle pops a MARK that was never pushed (byte ${pos})`);
    stack = prev;
    return items;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) throw new PickleError(`pickle memo key ${i} is missing`);
    return memo.get(i);
  };
  const findGlobal = (module: string, name: string): PickleGlobal => {
    const g = opts.resolveGlobal(module, name);
    if (!g) {
      throw new PickleError(
        `pickle references the Python global "${module}.${name}", which is not allowed in a checkpoint ` +
          '(only torch tensor/storage rebuild functions and collections.OrderedDict are accepted)',
      );
    }
    return g;
  };
  const setItems = (dict: unknown, items: unknown[]): void => {
    if (!(dict instanceof Map)) throw new PickleError('SETITEM(S) applied to something that is not a dict');
    if (items.length % 2 !== 0) throw new PickleError('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) dict.set(dictKey(items[i]), items[i + 1]);
  };
  const appendItems = (list: unknown, items: unknown[]): void => {
    if (!Array.isArray(list)) throw new PickleError('APPEND(S) applied to something that is not a list');
    list.push(...items);
  };
  const decodeLong = (b: Buffer): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw new PickleError('pickle protocol above 5 is not supported');
        break;
      case 0x95: // FRAME (framing is only a read-ahead hint)
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || metastack.length !== 0)
          throw new PickleError('pickle ended with an unbalanced stack');
        return stack[0];
      case 0x28: // MARK
        metastack.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(bytes(u8())));
        break;
      case 0x8b: // LONG4
        stack.push(decodeLong(bytes(u32())));
        break;
      case 0x49: {
        // INT (protocol 0): also encodes booleans as 00/01
        const s = line();
        if (s === '00') stack.push(false);
        else if (s === '01') stack.push(true);
        else if (/^[+-]?\d+$/.test(s)) stack.push(Number(s));
        else throw new PickleError(`bad INT literal ${JSON.stringify(s)}`);
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        need(8);
        stack.push(buf.readDoubleBE(pos));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(bytes(u32()).toString('utf8'));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(bytes(u8()).toString('utf8'));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(bytes(u64()).toString('utf8'));
        break;
      case 0x54: // BINSTRING (py2 str)
        stack.push(bytes(i32()).toString('latin1'));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(bytes(u8()).toString('latin1'));
        break;
      case 0x42: // BINBYTES
        stack.push(new Uint8Array(bytes(u32())));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(new Uint8Array(bytes(u8())));
        break;
      case 0x8e: // BINBYTES8
        stack.push(new Uint8Array(bytes(u64())));
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: {
        // TUPLE (pop first: popMark replaces `stack`)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x6c: {
        // LIST
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x64: {
        // DICT
        const items = popMark();
        const d = new Map();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        const name = line();
        stack.push(findGlobal(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string')
          throw new PickleError('STACK_GLOBAL needs two strings');
        stack.push(findGlobal(module, name));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PickleGlobal) || !fn.call) {
          throw new PickleError(
            `pickle calls ${fn instanceof PickleGlobal ? `"${fn.qualifiedName}"` : 'a non-callable value'}, which is not allowed`,
          );
        }
        if (!Array.isArray(args)) throw new PickleError(`REDUCE arguments for ${fn.qualifiedName} are not a tuple`);
        stack.push(fn.call(args));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof Map) {
          (obj as PickleDict)[DICT_ATTRIBUTES] = state;
        } else if (isBuildable(obj)) {
          obj.pickleBuild(state);
        } else {
          throw new PickleError(`BUILD (__setstate__) on an unsupported object at byte ${at}`);
        }
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad)
          throw new PickleError('pickle uses persistent ids but no persistent_load is available');
        stack.push(opts.persistentLoad(pid));
        break;
      }
      default:
        throw new PickleError(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}`);
    }
  }
}
