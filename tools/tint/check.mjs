// Compiles a `bilevel shaders --dump DIR` with Dawn's Tint (the npm package `webgpu`,
// dawn.node): every module, and every pipeline whose storage buffers the adapter's limit
// allows, with its override constants and its explicit binding layout. Prints one line per
// failure and a summary; exits 1 if anything failed to compile, 2 if there is no adapter.
//
//     node tools/tint/check.mjs DIR
//
// Dawn needs a Vulkan driver it accepts: Mesa 25's lavapipe (VK_ICD_FILENAMES), not 22.3's.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { create, globals } from 'webgpu';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tools/tint/check.mjs DIR');
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(dir, 'pipelines.json'), 'utf8'));

Object.assign(globalThis, globals);
// Held for the whole run: dawn.node crashes once the instance is collected.
const gpu = create([]);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error('tint: no WebGPU adapter (Dawn needs e.g. Mesa 25\'s lavapipe: VK_ICD_FILENAMES)');
  process.exit(2);
}
const features = adapter.features.has('subgroups') ? ['subgroups'] : [];
// The adapter's own limits, not WebGPU's defaults: bilevel asks for what the adapter has.
const requiredLimits = {};
for (const key of ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX']) {
  requiredLimits[key] = adapter.limits[key];
}
const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
const info = adapter.info;
console.log(`tint: ${info.description || info.device} (${info.vendor}), subgroups ${features.length ? 'yes' : 'no'}`);

let failures = 0;
const fail = (what, message) => {
  failures += 1;
  console.log(`FAIL ${what}: ${message}`);
};

const modules = new Map();
for (const m of manifest.modules) {
  if (m.subgroups && !features.length) {
    console.log(`skip ${m.name}: the adapter has no subgroups`);
    continue;
  }
  const code = readFileSync(join(dir, m.file), 'utf8');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: m.name, code });
  const errors = (await module.getCompilationInfo()).messages.filter((x) => x.type === 'error');
  const scope = await device.popErrorScope();
  for (const e of errors) fail(m.name, `${m.file}:${e.lineNum}:${e.linePos}: ${e.message}`);
  if (scope && !errors.length) fail(m.name, scope.message);
  if (!errors.length && !scope) modules.set(m.name, module);
}

const layouts = new Map();
const layoutOf = (name) => {
  if (!layouts.has(name)) {
    const entries = manifest.layouts[name].map((e) => ({ ...e, visibility: GPUShaderStage.COMPUTE }));
    const bindGroupLayout = device.createBindGroupLayout({ label: name, entries });
    layouts.set(name, device.createPipelineLayout({ label: name, bindGroupLayouts: [bindGroupLayout] }));
  }
  return layouts.get(name);
};

let built = 0;
let skipped = 0;
const limit = device.limits.maxStorageBuffersPerShaderStage;
const start = Date.now();
for (const p of manifest.pipelines) {
  const module = modules.get(p.module);
  if (!module) {
    skipped += 1;
    continue;
  }
  if (p.storage_buffers > limit) {
    skipped += 1;
    continue;
  }
  device.pushErrorScope('validation');
  device.pushErrorScope('internal');
  try {
    await device.createComputePipelineAsync({
      label: p.label,
      layout: layoutOf(p.layout),
      compute: { module, entryPoint: p.entry, constants: p.constants },
    });
    built += 1;
  } catch (e) {
    fail(p.label, e.message);
  }
  const internal = await device.popErrorScope();
  const validation = await device.popErrorScope();
  for (const e of [internal, validation]) if (e) fail(p.label, e.message);
}
const seconds = ((Date.now() - start) / 1000).toFixed(1);
console.log(`tint: ${modules.size} of ${manifest.modules.length} modules, ${built} pipelines built, ` +
  `${skipped} skipped (more than ${limit} storage buffers, or no subgroups), ${failures} failures (${seconds} s)`);
device.destroy();
process.exit(failures ? 1 : 0);
