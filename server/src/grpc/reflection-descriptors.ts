/**
 * Repairs the file descriptors @grpc/proto-loader builds (via protobufjs' descriptor extension)
 * before they are served by reflection. protobufjs names the synthetic entry message of a
 * `map<K, V> foo` field "Foo" where protoc (and every reflection client that validates, such as
 * buf curl and grpcurl) requires "FooEntry"; clients then reject the whole file ("incorrect
 * implicit map entry name", grpcurl issue #519), which hides grpc.health.v1.Health (its List RPC
 * returns a map). The repair renames such entries and points their fields at the new name.
 */
import type * as protoLoader from '@grpc/proto-loader';
import * as descriptor from 'protobufjs/ext/descriptor';

interface FieldLike {
  name?: string;
  label?: number;
  typeName?: string;
}
interface MessageLike {
  name?: string;
  field?: FieldLike[];
  nestedType?: MessageLike[];
  options?: { mapEntry?: boolean };
}
interface FileLike {
  package?: string;
  messageType?: MessageLike[];
}

const LABEL_REPEATED = 3;

/** protoc's MapEntryName: "foo_bar" → "FooBarEntry". */
export function mapEntryName(fieldName: string): string {
  let out = '';
  let upperNext = true;
  for (const ch of fieldName) {
    if (ch === '_') {
      upperNext = true;
      continue;
    }
    out += upperNext ? ch.toUpperCase() : ch;
    upperNext = false;
  }
  return `${out}Entry`;
}

function repairMessage(msg: MessageLike, fqn: string): boolean {
  let changed = false;
  for (const nested of msg.nestedType ?? []) {
    if (!nested.options?.mapEntry || !nested.name) continue;
    const oldName = nested.name;
    const field = (msg.field ?? []).find(
      (f) =>
        f.label === LABEL_REPEATED &&
        (f.typeName === oldName || f.typeName === `.${fqn}.${oldName}` || f.typeName === `${fqn}.${oldName}`),
    );
    if (!field?.name) continue;
    const expected = mapEntryName(field.name);
    if (oldName !== expected) {
      nested.name = expected;
      changed = true;
    }
    const qualified = `.${fqn}.${expected}`;
    if (field.typeName !== qualified) {
      field.typeName = qualified;
      changed = true;
    }
  }
  for (const nested of msg.nestedType ?? []) changed = repairMessage(nested, `${fqn}.${nested.name}`) || changed;
  return changed;
}

/** Returns `def` with every file descriptor's map entries named as protoc names them. */
export function repairMapEntries(def: protoLoader.PackageDefinition): protoLoader.PackageDefinition {
  const fixedByOriginal = new Map<Buffer, Buffer>();
  const fix = (bin: Buffer): Buffer => {
    const hit = fixedByOriginal.get(bin);
    if (hit) return hit;
    const decoded = descriptor.FileDescriptorProto.decode(bin);
    const file = decoded as unknown as FileLike;
    let changed = false;
    for (const msg of file.messageType ?? []) {
      changed = repairMessage(msg, file.package ? `${file.package}.${msg.name}` : `${msg.name}`) || changed;
    }
    const out = changed ? Buffer.from(descriptor.FileDescriptorProto.encode(decoded).finish()) : bin;
    fixedByOriginal.set(bin, out);
    return out;
  };
  const result: protoLoader.PackageDefinition = {};
  for (const [name, entry] of Object.entries(def)) {
    const files = (entry as { fileDescriptorProtos?: Buffer[] }).fileDescriptorProtos;
    result[name] = Array.isArray(files) ? ({ ...entry, fileDescriptorProtos: files.map(fix) } as typeof entry) : entry;
  }
  return result;
}
