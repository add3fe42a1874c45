/**
 * deploy/docker/Dockerfile lint. No Docker engine runs here, so the Dockerfile is kept correct by
 * parsing it properly (dockerfile-ast, plus dockerfile-utils' own validator for syntax/semantics)
 * and enforcing the rules that matter for this image (hadolint's DL3000/3004/3007/3009/3015/3016/
 * 3020/3025/3027/4006 equivalents and a few of our own), then cross-checking it against the k8s
 * manifests, .dockerignore and package.json. When hadolint is on PATH it runs too.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DockerfileParser, Instruction } from 'dockerfile-ast';
import { validate, ValidationSeverity } from 'dockerfile-utils';
import { parse as parseYaml } from 'yaml';
import { buildTrainingManifests } from '../../server/src/finetune/full/manifests';
import { OPEN_CLIP_TRAIN_COMMIT } from '../../server/src/finetune/full/trainer-args';

const REPO = path.resolve(__dirname, '..', '..');
const DOCKERFILE = path.join(REPO, 'deploy', 'docker', 'Dockerfile');
const TARGETS = ['cpu', 'gpu'];

interface Stage {
  name: string | null;
  base: string;
  instructions: Instruction[];
}

/** `$VAR` / `${VAR}` substitution from the global ARG defaults (what FROM lines may use). */
function substitute(text: string, vars: Record<string, string>): string {
  return text.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (m, a?: string, b?: string) => vars[(a ?? b)!] ?? m,
  );
}

/** Splits an image reference into name, tag and digest (a registry host:port is not a tag). */
export function parseImageRef(ref: string): { name: string; tag?: string; digest?: string } {
  const [nameTag, digest] = ref.split('@', 2);
  const lastSlash = nameTag.lastIndexOf('/');
  const colon = nameTag.indexOf(':', lastSlash + 1);
  return colon < 0
    ? { name: nameTag, digest }
    : { name: nameTag.slice(0, colon), tag: nameTag.slice(colon + 1), digest };
}

/** Flags (--from, --chown, ...) of instructions that take them; dockerfile-ast keeps them apart from arguments. */
function flagsOf(i: Instruction): Record<string, string | null> {
  const withFlags = i as unknown as { getFlags?: () => Array<{ getName(): string; getValue(): string | null }> };
  return Object.fromEntries((withFlags.getFlags?.() ?? []).map((f) => [f.getName(), f.getValue()]));
}

/** Instruction arguments (flags excluded) as one line: continuation backslashes and newlines folded. */
function argsOf(i: Instruction): string {
  return (i.getRawArgumentsContent() ?? '')
    .replace(/\\\r?\n/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

function parseStages(content: string): {
  globals: Record<string, string>;
  stages: Stage[];
  directives: Array<{ name: string; value: string }>;
} {
  const df = DockerfileParser.parse(content);
  const globals: Record<string, string> = {};
  for (const arg of df.getInitialARGs()) {
    const p = arg.getProperty();
    if (p?.getName() && p.getValue() !== null) globals[p.getName()] = p.getValue()!;
  }
  const stages: Stage[] = [];
  for (const i of df.getInstructions()) {
    if (i.getKeyword() === 'FROM') {
      const from = i as unknown as { getImage(): string | null; getBuildStage(): string | null };
      stages.push({ name: from.getBuildStage(), base: substitute(from.getImage() ?? '', globals), instructions: [] });
    } else if (stages.length) {
      stages[stages.length - 1].instructions.push(i);
    }
  }
  const directives = df.getDirectives().map((d) => ({ name: d.getName(), value: d.getValue() }));
  return { globals, stages, directives };
}

/** Every rule violation in a Dockerfile ([] when clean). */
export function lintDockerfile(content: string, targets: string[]): string[] {
  const problems: string[] = [];
  for (const d of validate(content)) {
    if (d.severity === ValidationSeverity.ERROR || d.severity === ValidationSeverity.WARNING) {
      problems.push(`line ${d.range.start.line + 1}: ${d.message}`);
    }
  }
  const { stages, directives } = parseStages(content);
  const stageNames = new Set<string>();
  const pinned = (ref: string, what: string): void => {
    const { tag, digest } = parseImageRef(ref);
    if (!digest || !/^sha256:[a-f0-9]{64}$/.test(digest))
      problems.push(`${what} ${ref} is not pinned by digest (@sha256:...)`);
    if (!tag || tag === 'latest' || !/\d/.test(tag)) problems.push(`${what} ${ref} has no exact version tag`);
  };
  for (const d of directives) if (d.name.toLowerCase() === 'syntax') pinned(d.value, 'syntax directive');

  for (const stage of stages) {
    const label = `stage ${stage.name ?? '<unnamed>'}`;
    if (!stageNames.has(stage.base)) pinned(stage.base, `${label}: base image`);
    let pipefail = false;
    for (const i of stage.instructions) {
      const kw = i.getKeyword();
      const args = argsOf(i);
      const at = `${label}, line ${i.getRange().start.line + 1}, ${kw}`;
      if (kw === 'SHELL' && /pipefail/.test(args)) pipefail = true;
      if (kw === 'WORKDIR' && !args.startsWith('/') && !args.startsWith('$'))
        problems.push(`${at}: WORKDIR must be absolute`);
      if (kw === 'ADD') {
        if (/(^|\s)(https?|git|ftp):\/\/|(^|\s)git@/.test(args))
          problems.push(`${at}: ADD from a URL (unverified download into a layer)`);
        else if (!/\.(tar|tar\.gz|tgz|tar\.bz2|tar\.xz)(\s|$)/.test(args))
          problems.push(`${at}: use COPY for files and directories`);
      }
      if (kw === 'ENV' || kw === 'ARG') {
        for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)/g)) {
          if (
            /PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH/i.test(m[1]) &&
            m[2].replace(/["']/g, '') !== ''
          ) {
            problems.push(`${at}: ${m[1]} bakes a secret into the image`);
          }
        }
      }
      if (kw === 'COPY' || kw === 'ADD') {
        if (/(^|[\s/])(id_rsa|id_ed25519|\.env|credentials|\.netrc)(\s|$)|\.(pem|key|p12|pfx)(\s|$)/.test(args))
          problems.push(`${at}: copies key or credential material`);
        const from = flagsOf(i).from;
        if (from && !stageNames.has(from)) pinned(from, `${at}: --from image`);
      }
      if (kw === 'RUN') {
        if (/\bsudo\b/.test(args)) problems.push(`${at}: sudo in RUN`);
        if (/(^|[;&|]\s*)apt\s/.test(args)) problems.push(`${at}: use apt-get, not apt, in scripts`);
        if (/\bapt-get\s+(-\S+\s+)*install\b/.test(args)) {
          if (!/\bapt-get\s+update\b/.test(args))
            problems.push(`${at}: apt-get install without apt-get update in the same RUN (stale lists from the cache)`);
          if (!/--no-install-recommends/.test(args))
            problems.push(`${at}: apt-get install without --no-install-recommends`);
          if (!/(^|\s)(-y|--yes|-qq?y|-yq)(\s|$)/.test(args)) problems.push(`${at}: apt-get install without -y`);
          if (!/rm -rf \/var\/lib\/apt\/lists\/\*/.test(args))
            problems.push(`${at}: apt lists not removed (rm -rf /var/lib/apt/lists/*) in the same RUN`);
        } else if (/\bapt-get\s+update\b/.test(args)) {
          problems.push(`${at}: apt-get update without install in the same RUN`);
        }
        if (/\bnpm\s+(install|i|add)\b/.test(args))
          problems.push(`${at}: npm install; use npm ci (lockfile-exact, reproducible)`);
        if (/\b(curl|wget)\b[^|;&]*\|\s*(ba|z|da)?sh\b/.test(args))
          problems.push(`${at}: pipes a download into a shell`);
        if (/[^|]\|[^|]/.test(args) && !pipefail)
          problems.push(`${at}: pipe in RUN without SHELL ["/bin/bash", "-o", "pipefail", "-c"]`);
      }
    }
    if (stage.name) stageNames.add(stage.name);
  }
  if (!stages.some((s) => s.instructions.some((i) => i.getKeyword() === 'RUN' && /\bnpm ci\b/.test(argsOf(i)))))
    problems.push('no RUN npm ci: dependencies are not installed from the lockfile');

  for (const target of targets) {
    const stage = stages.find((s) => s.name === target);
    if (!stage) {
      problems.push(`no build target "${target}"`);
      continue;
    }
    const of = (kw: string): Instruction[] => stage.instructions.filter((i) => i.getKeyword() === kw);
    const user = of('USER').pop();
    const uid = user ? argsOf(user).split(':')[0] : undefined;
    if (!uid) problems.push(`target ${target}: no USER (would run as root)`);
    else if (uid === 'root' || uid === '0') problems.push(`target ${target}: USER is root`);
    else if (!/^\d+$/.test(uid))
      problems.push(`target ${target}: USER ${uid} is not numeric (Kubernetes runAsNonRoot cannot verify a name)`);
    const entry = of('ENTRYPOINT').pop();
    if (!entry) problems.push(`target ${target}: no ENTRYPOINT`);
    else if (!argsOf(entry).startsWith('['))
      problems.push(`target ${target}: ENTRYPOINT in shell form (signals would go to /bin/sh, not the server)`);
    const hc = of('HEALTHCHECK').pop();
    if (!hc || /^NONE\b/i.test(argsOf(hc))) problems.push(`target ${target}: no HEALTHCHECK`);
    if (of('EXPOSE').length === 0) problems.push(`target ${target}: EXPOSE documents no ports`);
  }
  return problems;
}

/** Final-stage facts the cross-checks need. */
function targetFacts(
  content: string,
  target: string,
): {
  uid: number;
  exposed: number[];
  entrypoint: string[];
  copies: Array<{ src: string[]; dest: string; from?: string }>;
  runs: string[];
} {
  const stage = parseStages(content).stages.find((s) => s.name === target)!;
  const of = (kw: string): Instruction[] => stage.instructions.filter((i) => i.getKeyword() === kw);
  const copies = of('COPY').map((i) => {
    const paths = argsOf(i).split(' ');
    return { src: paths.slice(0, -1), dest: paths[paths.length - 1], from: flagsOf(i).from ?? undefined };
  });
  return {
    uid: Number(argsOf(of('USER').pop()!).split(':')[0]),
    exposed: of('EXPOSE').flatMap((i) =>
      argsOf(i)
        .split(' ')
        .map((p) => Number(p.split('/')[0])),
    ),
    entrypoint: JSON.parse(argsOf(of('ENTRYPOINT').pop()!)) as string[],
    copies,
    runs: of('RUN').map(argsOf),
  };
}

const content = fs.readFileSync(DOCKERFILE, 'utf8');

describe('deploy/docker/Dockerfile', () => {
  test('passes the lint rules', () => {
    expect(lintDockerfile(content, TARGETS)).toEqual([]);
  });

  const hadolint = spawnSync('hadolint', ['--version'], { encoding: 'utf8' });
  (hadolint.status === 0 ? test : test.skip)('passes hadolint (when installed)', () => {
    const out = spawnSync('hadolint', ['--failure-threshold', 'warning', DOCKERFILE], { encoding: 'utf8' });
    expect(out.stdout + out.stderr).toBe('');
    expect(out.status).toBe(0);
  });
  if (hadolint.status !== 0) {
    console.warn(
      'hadolint is not installed (neither Debian nor npm ships it): the Dockerfile is checked by the rules in test/deploy/docker.test.ts only',
    );
  }

  describe.each(TARGETS)('target %s', (target) => {
    const facts = targetFacts(content, target);
    const deployment = parseYaml(fs.readFileSync(path.join(REPO, 'deploy', 'k8s', 'base', 'deployment.yaml'), 'utf8'));
    const pod = deployment.spec.template.spec;

    test('runs as the uid the Kubernetes pods declare, and exposes every container port', () => {
      expect(facts.uid).toBe(pod.securityContext.runAsUser);
      const ports = pod.containers.flatMap((c: { ports?: Array<{ containerPort: number }> }) =>
        (c.ports ?? []).map((p) => p.containerPort),
      );
      expect(facts.exposed.sort()).toEqual(expect.arrayContaining(ports.sort()));
    });

    test('entrypoint is tini -> entrypoint.sh -> exec clipserve serve "$@", and clipserve is the package bin', () => {
      expect(facts.entrypoint.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
      const script = facts.copies.find((c) => c.dest === facts.entrypoint[2]);
      expect(script?.src).toEqual(['deploy/docker/entrypoint.sh']);
      const lines = fs.readFileSync(path.join(REPO, script!.src[0]), 'utf8').trim().split('\n');
      expect(lines[lines.length - 1]).toBe('exec clipserve serve "$@"');
      const bin = (
        JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> }
      ).bin.clipserve;
      expect(facts.runs.some((r) => r.includes(`ln -s /app/${bin} /usr/local/bin/clipserve`))).toBe(true);
    });

    test('ships the converter that the Kubernetes init container runs', () => {
      const init = pod.initContainers.find((c: { name: string }) => c.name === 'prepare-model');
      const dest = facts.copies.find((c) => c.dest === init.command[0]);
      expect(dest?.src).toEqual(['deploy/docker/prepare-model.sh']);
    });

    test('ships package.json, proto/, dist/ and every non-TypeScript run-time file under server/', () => {
      // PACKAGE_ROOT-relative reads at run time: package.json, proto/, and data files kept beside the
      // sources (server/third_party/onnx/onnx.proto...). Generator scripts and docs are build-time only.
      const walk = (dir: string): string[] =>
        fs
          .readdirSync(dir, { withFileTypes: true })
          .flatMap((e) =>
            e.isDirectory() ? walk(path.join(dir, e.name)) : [path.relative(REPO, path.join(dir, e.name))],
          );
      // Sources and build-time scripts (the WebAssembly text and its assembler) are not run-time files.
      const runtimeFiles = walk(path.join(REPO, 'server')).filter(
        (f) => !/\.(ts|py|md|wat)$|\/build-[^/]*\.js$/.test(f),
      );
      const shipped = facts.copies
        .filter((c) => c.from)
        .flatMap((c) => c.src.map((s) => path.posix.relative('/app', s)));
      expect(shipped).toEqual(expect.arrayContaining(['package.json', 'proto', 'node_modules', 'dist']));
      const missing = runtimeFiles.filter((f) => !shipped.some((s) => f === s || f.startsWith(s + '/')));
      expect(missing).toEqual([]);
    });

    test('copies only build-context files that exist and that .dockerignore lets through', () => {
      const ignore = fs
        .readFileSync(path.join(REPO, '.dockerignore'), 'utf8')
        .split('\n')
        .map((l) => l.trim());
      expect(ignore).toContain('*');
      const sources = facts.copies.filter((x) => !x.from).flatMap((c) => c.src);
      expect(sources).toEqual(['deploy/docker/entrypoint.sh', 'deploy/docker/prepare-model.sh']);
      expect(sources.filter((src) => !fs.existsSync(path.join(REPO, src)))).toEqual([]);
      expect(sources.filter((src) => !ignore.some((l) => l === `!${src}` || l === `!${src}/`))).toEqual([]);
    });
  });

  describe("target trainer (the `full` fine-tune Jobs' image)", () => {
    const { globals, stages } = parseStages(content);
    const stage = stages.find((st) => st.name === 'trainer')!;
    const facts = targetFacts(content, 'trainer');
    const { job } = buildTrainingManifests({
      jobId: 'ftjob-1',
      namespace: 'ns',
      image: 'trainer',
      hp: { nodes: 1, gpus_per_node: 1 },
      trainerArgs: ['--epochs', '1'],
      storage: { pvcName: 'clipserve-data', mountPath: '/data' },
    });
    const pod = job.spec!.template.spec!;
    const container = pod.containers[0];

    test('a pinned CUDA PyTorch base, and not the default target (cpu stays last)', () => {
      expect(stage).toBeDefined();
      expect(parseImageRef(stage.base).name).toBe('pytorch/pytorch');
      expect(parseImageRef(stage.base).tag).toMatch(/^\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime$/);
      expect(stages[stages.length - 1].name).toBe('cpu');
    });

    test("installs open_clip and open_clip_train at the commit the server's command lines are verified against", () => {
      expect(globals.OPEN_CLIP_COMMIT).toBe(OPEN_CLIP_TRAIN_COMMIT);
      expect(stage.instructions.some((i) => i.getKeyword() === 'ARG' && argsOf(i) === 'OPEN_CLIP_COMMIT')).toBe(true);
      const install = facts.runs.find((r) => /\bpip install\b/.test(r))!;
      expect(install).toContain(
        '"open_clip_torch[training] @ https://github.com/mlfoundations/open_clip/archive/${OPEN_CLIP_COMMIT}.tar.gz"',
      );
      // The module the Job runs is imported at build time, and torchrun is there.
      const module = container.args![container.args!.indexOf('-m') + 1];
      expect(install).toContain(`import torch, open_clip, ${module}`);
      expect(install).toContain('torchrun --help');
    });

    test("runs as the Job pod's uid/gid, with its HOME, and torchrun as the entrypoint the Job names", () => {
      expect(facts.uid).toBe(pod.securityContext!.runAsUser);
      expect(argsOf(stage.instructions.filter((i) => i.getKeyword() === 'USER').pop()!)).toBe(
        `${pod.securityContext!.runAsUser}:${pod.securityContext!.runAsGroup}`,
      );
      expect(facts.entrypoint).toEqual(container.command);
      const home = container.env!.find((e) => e.name === 'HOME')!.value;
      expect(
        stage.instructions.some((i) => i.getKeyword() === 'ENV' && new RegExp(`\\bHOME=${home}\\b`).test(argsOf(i))),
      ).toBe(true);
      expect(facts.copies).toEqual([]); // no server code or build-context files in the trainer
    });
  });

  test('the build stage copies what it builds from, and all of it is re-included by .dockerignore', () => {
    const ignore = fs
      .readFileSync(path.join(REPO, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim());
    const build = parseStages(content).stages.find((s) => s.name === 'build')!;
    const sources = build.instructions
      .filter((i) => i.getKeyword() === 'COPY' && !flagsOf(i).from)
      .flatMap((i) => argsOf(i).split(' ').slice(0, -1));
    expect(sources).toEqual(
      expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.json', 'server', 'proto']),
    );
    expect(sources.filter((src) => !fs.existsSync(path.join(REPO, src)))).toEqual([]);
    expect(sources.filter((src) => !ignore.some((l) => l === `!${src}` || l === `!${src}/`))).toEqual([]);
  });

  test('the .npmrc baked into the build holds no registry credentials', () => {
    expect(fs.readFileSync(path.join(REPO, '.npmrc'), 'utf8')).not.toMatch(/_auth|_password|token/i);
  });
});

describe('the Dockerfile lint catches what it is meant to', () => {
  const digest = 'sha256:' + 'a'.repeat(64);
  const good = [
    `FROM node:20.20.0-bookworm-slim@${digest} AS build`,
    'RUN npm ci',
    `FROM node:20.20.0-bookworm-slim@${digest} AS cpu`,
    'COPY --from=build /app /app',
    'USER 10001:10001',
    'EXPOSE 50051',
    'HEALTHCHECK CMD ["node", "-e", "0"]',
    'ENTRYPOINT ["node", "/app/main.js"]',
  ];
  const lint = (lines: string[]): string => lintDockerfile(lines.join('\n') + '\n', ['cpu']).join('\n');

  test('a minimal good Dockerfile is clean', () => {
    expect(lint(good)).toBe('');
  });

  test.each<[string, (l: string[]) => string[], RegExp]>([
    ['unpinned base', (l) => [l[0].replace(/@sha256:\w+/, ''), ...l.slice(1)], /not pinned by digest/],
    ['latest tag', (l) => [`FROM node:latest@${digest} AS build`, ...l.slice(1)], /no exact version tag/],
    [
      'ARG-substituted unpinned base',
      (l) => ['ARG BASE=node:20', 'FROM ${BASE} AS build', ...l.slice(1)],
      /base image node:20 is not pinned by digest/,
    ],
    ['root user', (l) => l.map((x) => (x.startsWith('USER') ? 'USER root' : x)), /USER is root/],
    ['no user', (l) => l.filter((x) => !x.startsWith('USER')), /no USER/],
    ['named user', (l) => l.map((x) => (x.startsWith('USER') ? 'USER node' : x)), /not numeric/],
    ['secret in ENV', (l) => [...l, 'ENV HF_TOKEN=hf_abc'], /HF_TOKEN bakes a secret/],
    ['ADD from URL', (l) => [...l, 'ADD https://example.com/x.tgz /x.tgz'], /ADD from a URL/],
    ['ADD of plain files', (l) => [...l, 'ADD server /app/server'], /use COPY/],
    ['private key copied', (l) => [...l, 'COPY deploy/tls.key /etc/tls.key'], /key or credential/],
    [
      'COPY --from an unpinned image',
      (l) => [...l, 'COPY --from=busybox:1.36 /bin/busybox /bin/busybox'],
      /--from image busybox:1.36 is not pinned/,
    ],
    ['no HEALTHCHECK', (l) => l.filter((x) => !x.startsWith('HEALTHCHECK')), /no HEALTHCHECK/],
    [
      'shell-form ENTRYPOINT',
      (l) => l.map((x) => (x.startsWith('ENTRYPOINT') ? 'ENTRYPOINT node /app/main.js' : x)),
      /shell form/,
    ],
    [
      'apt lists kept',
      (l) => [...l, 'RUN apt-get update && apt-get install -y --no-install-recommends tini'],
      /apt lists not removed/,
    ],
    [
      'apt recommends',
      (l) => [...l, 'RUN apt-get update && apt-get install -y tini && rm -rf /var/lib/apt/lists/*'],
      /--no-install-recommends/,
    ],
    ['apt update alone', (l) => [...l, 'RUN apt-get update'], /update without install/],
    ['npm install', (l) => l.map((x) => x.replace('npm ci', 'npm install')), /use npm ci/],
    [
      'curl | sh',
      (l) => [...l, 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]', 'RUN curl -fsSL https://x.example/i.sh | sh'],
      /pipes a download into a shell/,
    ],
    ['pipe without pipefail', (l) => [...l, 'RUN ls | wc -l'], /without SHELL/],
    ['relative WORKDIR', (l) => [...l, 'WORKDIR app'], /WORKDIR must be absolute/],
    ['missing target', (l) => l.map((x) => x.replace('AS cpu', 'AS runtime')), /no build target "cpu"/],
    ['unknown instruction (dockerfile-utils)', (l) => [...l, 'RUNN echo'], /line \d+: .*RUNN/i],
  ])('%s', (_name, mutate, expected) => {
    expect(lint(mutate(good))).toMatch(expected);
  });

  test('image references split into name, tag and digest', () => {
    expect(parseImageRef(`registry:5000/team/img:1.2@${digest}`)).toEqual({
      name: 'registry:5000/team/img',
      tag: '1.2',
      digest,
    });
    expect(parseImageRef('registry:5000/team/img')).toEqual({ name: 'registry:5000/team/img', digest: undefined });
  });
});
