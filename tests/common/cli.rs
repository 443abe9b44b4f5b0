//! Helpers of the tests that run the real binary (`tests/cli*.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bilevel::gpu::CACHE_DIR_VAR;

pub const BIN: &str = env!("CARGO_BIN_EXE_bilevel");

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn bilevel(args: &[&str]) -> Output {
    bilevel_with(args, &[])
}

/// `bilevel` with `env` added to its environment, and the verification cache of this test
/// process (not the user's) unless `env` names another.
pub fn bilevel_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let runtime = std::env::temp_dir();
    let cache = runtime.join(format!("bilevel-cli-{}-cache", std::process::id()));
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .env(CACHE_DIR_VAR, cache)
        .envs(env.iter().copied())
        .output()
        .expect("the bilevel binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bilevel-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name`.
pub fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// An NPY v1 file of f32 (or f64) values with `shape`.
pub fn npy(dir: &Path, name: &str, shape: &[usize], values: &[f64], descr: &str) -> PathBuf {
    file(dir, name, &super::npy_bytes(shape, values, descr))
}

/// Reads the `--report` JSON of a run.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `weight` and `bias` bytes of a model file.
pub fn tensors(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (
        t.tensor("weight").unwrap().data().to_vec(),
        t.tensor("bias").unwrap().data().to_vec(),
    )
}
