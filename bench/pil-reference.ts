/**
 * open_clip's eval transform on Pillow + torchvision in a Python child process, for side-by-side
 * timing against clipserve's preprocessing (`npm run bench:preprocess`). Debian's python3-pil
 * (Pillow 9.4) and python3-torchvision (0.14) are what the goldens were made with; where they are
 * missing the bench runs clipserve alone and says so.
 *
 * The child times N decode+transform runs of one file per request, on one thread
 * (torch.set_num_threads(1)), and returns wall and process-CPU seconds and the SHA-256 of the
 * float32 tensor, so the bench also shows that both sides computed the same bits.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import { createInterface, type Interface } from 'node:readline';

/** `image_transform(224, is_train=False)` of open_clip (transform.py) with its OpenAI mean/std:
 *  Resize(224, bicubic) → CenterCrop(224) → convert('RGB') → ToTensor → Normalize. */
const PYTHON_SOURCE = String.raw`
import hashlib, io, json, os, sys, time
import torch
torch.set_num_threads(1)
from PIL import Image
import PIL
import torchvision
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
tf = T.Compose([
    T.Resize(224, interpolation=InterpolationMode.BICUBIC),
    T.CenterCrop(224),
    lambda im: im.convert('RGB'),
    T.ToTensor(),
    T.Normalize(mean=MEAN, std=STD),
])
print(json.dumps({'ready': True, 'pillow': PIL.__version__, 'torchvision': torchvision.__version__, 'torch': torch.__version__}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    data = open(req['file'], 'rb').read()
    out = tf(Image.open(io.BytesIO(data)))  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(req['n']):
        out = tf(Image.open(io.BytesIO(data)))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    sha = hashlib.sha256(out.numpy().astype('<f4').tobytes()).hexdigest()
    print(json.dumps({'wall': wall, 'cpu': cpu, 'sha256': sha}), flush=True)
`;

export interface ReferenceTiming {
  /** seconds per image */
  wall: number;
  cpu: number;
  sha256: string;
}

export interface ReferenceVersions {
  pillow: string;
  torchvision: string;
  torch: string;
}

/** The Python that has Pillow and torchvision: $CLIPSERVE_PIL_PYTHON, else Debian's
 *  /usr/bin/python3 (its dist-packages), else python3 on PATH. Undefined when none imports them. */
export function findReferencePython(): string | undefined {
  const candidates = [process.env.CLIPSERVE_PIL_PYTHON, '/usr/bin/python3', 'python3'].filter((c): c is string => !!c);
  for (const py of candidates) {
    if (py.includes('/') && !fs.existsSync(py)) continue;
    const r = spawnSync(py, ['-c', 'import PIL, torch, torchvision'], { stdio: 'ignore', timeout: 60_000 });
    if (r.status === 0) return py;
  }
  return undefined;
}

export class PilReference {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly lines: Interface,
    readonly versions: ReferenceVersions,
  ) {}

  static async start(python: string): Promise<PilReference> {
    // One thread for every math library torch may load, not only its own pool.
    const env = { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
    const child = spawn(python, ['-c', PYTHON_SOURCE], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout });
    const first = await nextLine(lines, () => stderr);
    const hello = JSON.parse(first) as ReferenceVersions & { ready: boolean };
    return new PilReference(child, lines, { pillow: hello.pillow, torchvision: hello.torchvision, torch: hello.torch });
  }

  /** Times `n` runs of the eval transform on `file` (after one warm-up run). */
  async time(file: string, n: number): Promise<ReferenceTiming> {
    this.child.stdin.write(`${JSON.stringify({ file, n })}\n`);
    const r = JSON.parse(await nextLine(this.lines, () => '')) as { wall: number; cpu: number; sha256: string };
    return { wall: r.wall / n, cpu: r.cpu / n, sha256: r.sha256 };
  }

  close(): void {
    this.lines.close();
    this.child.stdin.end();
    this.child.kill();
  }
}

function nextLine(lines: Interface, stderr: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    const onLine = (l: string): void => {
      cleanup();
      resolve(l);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error(`the PIL reference process ended: ${stderr().trim().split('\n').slice(-3).join(' | ')}`));
    };
    const cleanup = (): void => {
      lines.off('line', onLine);
      lines.off('close', onClose);
    };
    lines.on('line', onLine);
    lines.on('close', onClose);
  });
}
