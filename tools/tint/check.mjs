// Compiles a `bilevel shaders --dump DIR` with Dawn's Tint (the npm package `webgpu`,
// dawn.node): every module, and every pipeline whose storage buffers the adapter's limit
// allows, with its override constants and its explicit binding layout; then again on a
// device with WebGPU's default limits and no features, where every pipeline the dump marks
// `portable` must build. Prints one line per failure and a summary; exits 1 if anything
// failed to compile, 2 if there is no adapter.
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
let failures = 0;
const fail = (what, message) => {
  failures += 1;
  console.log(`FAIL ${what}: ${message}`);
};

// Compiles every module and every pipeline `device` can take; returns the labels built.
async function check(device, features, what) {
  const modules = new Map();
  for (const m of manifest.modules) {
    if (m.subgroups && !features.length) continue;
    const code = readFileSync(join(dir, m.file), 'utf8');
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ label: m.name, code });
    const errors = (await module.getCompilationInfo()).messages.filter((x) => x.type === 'error');
    const scope = await device.popErrorScope();
    for (const e of errors) fail(`${what}: ${m.name}`, `${m.file}:${e.lineNum}:${e.linePos}: ${e.message}`);
    if (scope && !errors.length) fail(`${what}: ${m.name}`, scope.message);
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
  const built = new Set();
  let skipped = 0;
  const limit = device.limits.maxStorageBuffersPerShaderStage;
  const start = Date.now();
  for (const p of manifest.pipelines) {
    const module = modules.get(p.module);
    if (!module || p.storage_buffers > limit) {
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
      built.add(p.label);
    } catch (e) {
      fail(`${what}: ${p.label}`, e.message);
    }
    const internal = await device.popErrorScope();
    const validation = await device.popErrorScope();
    for (const e of [internal, validation]) if (e) fail(`${what}: ${p.label}`, e.message);
  }
  const seconds = ((Date.now() - start) / 1000).toFixed(1);
  console.log(`tint (${what}): ${modules.size} of ${manifest.modules.length} modules, ${built.size} pipelines built, ` +
    `${skipped} skipped (more than ${limit} storage buffers, or no subgroups) (${seconds} s)`);
  return built;
}

const features = adapter.features.has('subgroups') ? ['subgroups'] : [];
// The adapter's own limits, not WebGPU's defaults: bilevel asks for what the adapter has.
const requiredLimits = {};
for (const key of ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX']) {
  requiredLimits[key] = adapter.limits[key];
}
const info = adapter.info;
console.log(`tint: ${info.description || info.device} (${info.vendor}), subgroups ${features.length ? 'yes' : 'no'}`);
const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
await check(device, features, "the adapter's limits");
device.destroy();

// As a browser gives a page that asks for nothing: WebGPU's default limits (8 storage
// buffers, 16 KiB of workgroup memory), no subgroups. The portable path must build there.
// (A device consumes its adapter: a fresh one for the second.)
const plain = await (await gpu.requestAdapter()).requestDevice();
const built = await check(plain, [], 'WebGPU defaults');
for (const p of manifest.pipelines.filter((x) => x.portable)) {
  if (!built.has(p.label)) fail(`WebGPU defaults: ${p.label}`, 'a portable pipeline did not build');
}
plain.destroy();
console.log(`tint: ${failures} failures`);
process.exit(failures ? 1 : 0);
