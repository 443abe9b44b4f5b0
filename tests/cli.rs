//! The real binary: bad input of every kind, real data sets, and the model file's layout.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::*;

const GOOD_CSV: &str = "a,b,label\n1,2,0\n3,4,1\n5,6,1\n7,8,0\n";

#[test]
fn bad_input_is_refused_clearly() {
    let dir = scratch("bad");
    let csv = |name: &str, text: &str| file(&dir, name, text.as_bytes()).display().to_string();
    let model = dir.join("good.safetensors");
    let good = file(&dir, "good.csv", GOOD_CSV.as_bytes());
    let trained = bilevel(&[
        "train",
        good.to_str().unwrap(),
        "--backend",
        "cpu",
        "--global-steps",
        "5",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let m = model.to_str().unwrap().to_string();
    let x3 = npy(
        &dir,
        "x3.npy",
        &[3, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "<f4",
    );
    let y2 = npy(&dir, "y2.npy", &[2], &[0.0, 1.0], "<f4");
    let y3 = npy(&dir, "y3.npy", &[3], &[0.0, 1.0, 1.0], "<f4");
    let x3d = npy(&dir, "x3d.npy", &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0], "<f4");
    let xint = npy(&dir, "xint.npy", &[2, 2], &[1.0, 2.0, 3.0, 4.0], "<i4");
    let garbage = file(&dir, "garbage.npy", b"not an npy file at all");
    // A header claiming 10^12 rows over a few bytes of data.
    let big_shape = npy(
        &dir,
        "huge.npy",
        &[1_000_000_000_000, 2],
        &[1.0, 2.0, 3.0, 4.0],
        "<f4",
    );
    let bad_model = file(
        &dir,
        "bad.safetensors",
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
    );
    let toml_unknown = file(
        &dir,
        "unknown.toml",
        b"[[phase]]\noptimizer = \"sgd\"\nsteps = 3\nspeed = 11\n",
    );
    let toml_bad_subset = file(
        &dir,
        "subset.toml",
        b"[[phase]]\noptimizer = \"sgd\"\nsteps = 3\nparams = \"rows:1..2\"\n",
    );
    let wide = file(&dir, "wide.csv", b"a,b,c,label\n1,2,3,0\n4,5,6,1\n");

    // (what, arguments, text the message must contain)
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "non-numeric field",
            vec![csv("c1.csv", "a,b,label\n1,2,0\n3,x,1\n")],
            "c1.csv:3: column 'b' (index 1): 'x' is not a number",
        ),
        (
            "empty field",
            vec![csv("c2.csv", "a,b,label\n1,,0\n")],
            "c2.csv:2: column 'b' (index 1) is empty",
        ),
        (
            "NaN feature",
            vec![csv("c3.csv", "a,b,label\n1,NaN,0\n")],
            "c3.csv:2: column 'b' (index 1): feature value NaN is not finite",
        ),
        (
            "infinite feature",
            vec![csv("c4.csv", "a,b,label\n1,2,0\ninf,2,1\n")],
            "c4.csv:3: column 'a' (index 0): feature value inf is not finite",
        ),
        (
            "label above 1",
            vec![csv("c5.csv", "a,b,label\n1,2,2\n")],
            "c5.csv:2: label column 'label' (index 2): 2 is not in [0, 1]",
        ),
        (
            "negative label",
            vec![csv("c6.csv", "a,b,label\n1,2,-0.5\n")],
            "c6.csv:2: label column 'label' (index 2): -0.5 is not in [0, 1]",
        ),
        (
            "short row",
            vec![csv("c7.csv", "a,b,label\n1,2,0\n3,1\n")],
            "c7.csv:3: row has 2 fields, expected 3",
        ),
        (
            "long row",
            vec![csv("c8.csv", "a,b,label\n1,2,0,9\n")],
            "c8.csv:2: row has 4 fields, expected 3",
        ),
        (
            "empty CSV",
            vec![csv("c9.csv", "")],
            "c9.csv:1: the file is empty",
        ),
        (
            "header only",
            vec![csv("c10.csv", "a,b,label\n")],
            "c10.csv:2: the file has a header but no rows",
        ),
        (
            "unknown label column",
            vec![csv("c11.csv", GOOD_CSV), "--labels".into(), "target".into()],
            "c11.csv:1: no column named 'target'",
        ),
        (
            "label index out of range",
            vec![csv("c12.csv", GOOD_CSV), "--labels".into(), "7".into()],
            "c12.csv:1: column index 7 is outside the file's 3 columns",
        ),
        (
            "LIBSVM index 0",
            vec![csv("l1.libsvm", "+1 1:0.5 2:1\n-1 0:1\n")],
            "l1.libsvm:2: feature index 0 is below 1",
        ),
        (
            "LIBSVM negative index",
            vec![csv("l2.libsvm", "+1 -3:0.5\n")],
            "l2.libsvm:1: feature index -3 is below 1",
        ),
        (
            "LIBSVM non-numeric value",
            vec![csv("l3.libsvm", "+1 1:0.5\n-1 2:abc\n")],
            "l3.libsvm:2: feature 2: 'abc' is not a number",
        ),
        (
            "LIBSVM label 2",
            vec![csv("l4.libsvm", "# header comment\n2 1:0.5\n")],
            "l4.libsvm:2: label '2' is not -1, +1, 0 or 1",
        ),
        (
            "LIBSVM pair without colon",
            vec![csv("l5.libsvm", "+1 1:0.5 7\n")],
            "l5.libsvm:1: '7' is not index:value",
        ),
        (
            "LIBSVM empty",
            vec![csv("l6.libsvm", "# only a comment\n\n")],
            "l6.libsvm:1: the file has no data lines",
        ),
        (
            "LIBSVM NaN value",
            vec![csv("l7.libsvm", "+1 1:nan\n")],
            "l7.libsvm:1: feature 1: value NaN is not finite",
        ),
        (
            "LIBSVM huge index",
            vec![csv("l8.libsvm", "+1 4294967295:1\n")],
            "l8.libsvm:1: feature index 4294967295 is above the 16777216 features allowed",
        ),
        (
            "NPY row mismatch",
            vec![
                x3.display().to_string(),
                "--y".into(),
                y2.display().to_string(),
            ],
            "y2.npy:1: Y has shape [2] but X has 3 rows",
        ),
        (
            "NPY 3-D",
            vec![
                x3d.display().to_string(),
                "--y".into(),
                y3.display().to_string(),
            ],
            "x3d.npy:1: X must be 2-D",
        ),
        (
            "NPY garbage",
            vec![
                garbage.display().to_string(),
                "--y".into(),
                y3.display().to_string(),
            ],
            "garbage.npy:1: not a valid NPY file",
        ),
        (
            "NPY integer dtype",
            vec![
                xint.display().to_string(),
                "--y".into(),
                y3.display().to_string(),
            ],
            "xint.npy:1: dtype '<i4' is neither f32 nor f64",
        ),
        (
            "NPY shape beyond the file",
            vec![
                big_shape.display().to_string(),
                "--y".into(),
                y3.display().to_string(),
            ],
            "huge.npy:1: shape [1000000000000, 2] is larger than the file",
        ),
        (
            "missing file",
            vec![dir.join("nope.csv").display().to_string()],
            "nope.csv: No such file",
        ),
        (
            "run file with an unknown key",
            vec![
                good.display().to_string(),
                "--config".into(),
                toml_unknown.display().to_string(),
            ],
            "unknown.toml:4: unknown field `speed`",
        ),
        (
            "run file with a bad subset",
            vec![
                good.display().to_string(),
                "--config".into(),
                toml_bad_subset.display().to_string(),
            ],
            "unknown parameter subset 'rows:1..2'",
        ),
        (
            "empty feature range",
            vec![
                good.display().to_string(),
                "--local-params".into(),
                "features:2..1".into(),
            ],
            "feature range 2..1 is empty",
        ),
        (
            "pos_weight count",
            vec![
                good.display().to_string(),
                "--pos-weight".into(),
                "1,2".into(),
            ],
            "pos_weight has 2 values for 1 outputs",
        ),
        (
            "validation fraction",
            vec![
                good.display().to_string(),
                "--validation".into(),
                "1.5".into(),
            ],
            "--validation 1.5: the fraction must lie strictly between 0 and 1",
        ),
        (
            "synthetic spec",
            vec!["--synthetic".into(), "10,3".into()],
            "--synthetic '10,3': expected N,D,O,SEED",
        ),
        (
            "init shape",
            vec![wide.display().to_string(), "--init".into(), m.clone()],
            "the model is Linear(2, 1) but the data has 3 features",
        ),
        (
            "SGD options on Adam",
            vec![
                good.display().to_string(),
                "--local-optimizer".into(),
                "adam".into(),
                "--local-momentum".into(),
                "0.9".into(),
            ],
            "momentum, dampening and nesterov are SGD's",
        ),
    ];
    assert!(cases.len() >= 25);
    for (what, args, want) in &cases {
        let output = dir.join("out.safetensors");
        let report_path = dir.join("out.json");
        let mut full: Vec<&str> = vec!["train"];
        full.extend(args.iter().map(String::as_str));
        full.extend([
            "--backend",
            "cpu",
            "-o",
            output.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
        ]);
        let o = bilevel(&full);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{what}: exit status {:?}, stderr: {err}",
            o.status.code()
        );
        assert!(err.contains(want), "{what}: stderr lacks «{want}»:\n{err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{what}: the error should be one line:\n{err}"
        );
        assert!(
            !output.exists() && !report_path.exists(),
            "{what}: an output file was written"
        );
    }

    // predict and eval: a model that does not fit the data, and a file that is no model.
    let o = bilevel(&["predict", &m, wide.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wide.csv:0: the data has 3 features but the model expects 2"),
        "{}",
        stderr(&o)
    );
    let o = bilevel(&["eval", bad_model.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.safetensors"), "{}", stderr(&o));
    // An unknown option value is clap's usage error, also status 2.
    let o = bilevel(&["train", "--local-optimizer", "rmsprop"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value 'rmsprop'"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn breast_cancer_reaches_pytorch_loss() {
    let dir = scratch("bc");
    let report_path = dir.join("r.json");
    let o = bilevel(&[
        "train",
        data("breast_cancer.csv").to_str().unwrap(),
        "--standardize",
        "--local-params",
        "bias",
        "--local-lr",
        "0.1",
        "--local-steps",
        "50",
        "--global-lr",
        "0.05",
        "--global-steps",
        "300",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&report_path);
    let train = &r["metrics"]["train"][0];
    let accuracy = train["accuracy"].as_f64().unwrap();
    let loss = train["log_loss"].as_f64().unwrap();
    assert!(accuracy >= 0.985, "train accuracy {accuracy}");
    // PyTorch on the same configuration (tests/data/golden/breast_cancer_std.json).
    let pytorch = 0.048284640304372566;
    assert!(
        (loss - pytorch).abs() <= 0.02 * pytorch,
        "train log-loss {loss}, PyTorch {pytorch}"
    );
    assert_eq!(r["phases"][1]["steps"], 300);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn heart_scale_trains_through_the_libsvm_reader() {
    let dir = scratch("heart");
    let report_path = dir.join("r.json");
    let o = bilevel(&[
        "train",
        data("heart_scale.libsvm").to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let accuracy = report(&report_path)["metrics"]["train"][0]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(accuracy >= 0.84, "train accuracy {accuracy}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn digits_train_as_ten_one_vs_rest_outputs() {
    let dir = scratch("digits");
    let model = dir.join("digits.safetensors");
    let o = bilevel(&[
        "train",
        data("digits.csv").to_str().unwrap(),
        "--one-vs-rest",
        "--standardize",
        "--global-steps",
        "300",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Predicted class = the most probable output; compare with the digit column.
    let p = bilevel(&[
        "predict",
        model.to_str().unwrap(),
        data("digits.csv").to_str().unwrap(),
        "--one-vs-rest",
    ]);
    assert!(p.status.success(), "{}", stderr(&p));
    let text = stdout(&p);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().split(',').count(), 10);
    let digits = std::fs::read_to_string(data("digits.csv")).unwrap();
    let (mut right, mut total) = (0, 0);
    for (row, truth) in lines.zip(digits.lines().skip(1)) {
        let probs: Vec<f64> = row.split(',').map(|v| v.parse().unwrap()).collect();
        let best = (0..10)
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .unwrap();
        right += (best.to_string() == truth.rsplit(',').next().unwrap()) as usize;
        total += 1;
    }
    assert_eq!(total, 1797);
    let accuracy = right as f64 / total as f64;
    assert!(
        accuracy >= 0.95,
        "train accuracy (most probable class) {accuracy}"
    );
    // eval reports all ten outputs and the two averages.
    let e = bilevel(&[
        "eval",
        model.to_str().unwrap(),
        data("digits.csv").to_str().unwrap(),
        "--one-vs-rest",
        "--json",
    ]);
    assert!(e.status.success(), "{}", stderr(&e));
    let metrics: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!(metrics.as_array().unwrap().len(), 12);
    assert_eq!(metrics[10]["name"], "micro");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_file_is_a_pytorch_state_dict() {
    let dir = scratch("model");
    let model = dir.join("m.safetensors");
    let o = bilevel(&[
        "train",
        "--synthetic",
        "50,7,3,1",
        "--backend",
        "cpu",
        "--standardize",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&model).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = tensors.names();
    names.sort();
    assert_eq!(names, ["bias", "weight"]);
    let weight = tensors.tensor("weight").unwrap();
    assert_eq!(
        (weight.dtype(), weight.shape()),
        (safetensors::Dtype::F32, &[3usize, 7][..])
    );
    let bias = tensors.tensor("bias").unwrap();
    assert_eq!(
        (bias.dtype(), bias.shape()),
        (safetensors::Dtype::F32, &[3usize][..])
    );
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["bilevel.diverged"], "false");
    let stats: serde_json::Value = serde_json::from_str(&meta["bilevel.standardize"]).unwrap();
    assert_eq!(stats["mean"].as_array().unwrap().len(), 7);
    let config: serde_json::Value = serde_json::from_str(&meta["bilevel.config"]).unwrap();
    assert_eq!(config["run"]["phase"][0]["name"], "local");

    // PyTorch itself, where it is installed.
    let script = format!(
        "import torch, safetensors.torch as st\n\
         m = torch.nn.Linear(7, 3)\n\
         m.load_state_dict(st.load_file({:?}), strict=True)\n\
         print('ok', tuple(m.weight.shape))",
        model.display().to_string()
    );
    match Command::new("python3").args(["-c", &script]).output() {
        Ok(out) if out.status.success() => {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok (3, 7)")
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            eprintln!("note: python3 lacks torch or safetensors; the PyTorch load was not tried");
        }
        Ok(out) => panic!(
            "PyTorch could not load the model: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("note: no python3; the PyTorch load was not tried"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_run_file_runs() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/block_coordinate.toml");
    let o = bilevel(&[
        "train",
        data("breast_cancer.csv").to_str().unwrap(),
        "--standardize",
        "--backend",
        "cpu",
        "--config",
        example.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for phase in ["bias", "block 1", "block 2", "block 3", "global"] {
        assert!(
            out.lines().any(|l| l.starts_with(phase)),
            "phase {phase} missing from:\n{out}"
        );
    }
}

/// Runs `bilevel` until its checkpoint appears, sends `signal`, and returns its exit status.
fn interrupt(args: &[&str], checkpoint: &Path, signal: &str) -> Option<i32> {
    let mut child = Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed().as_secs() < 120, "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("bilevel ended before it was interrupted: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The shell's own `kill`: no procps needed.
    let sent = Command::new("sh")
        .args(["-c", &format!("kill {signal} {}", child.id())])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("interrupted") && !err.contains("panicked"),
        "{err}"
    );
    output.status.code()
}

#[test]
fn signals_checkpoint_and_resume_gives_the_same_model() {
    let dir = scratch("signal");
    let whole = dir.join("whole.safetensors");
    let resumed = dir.join("resumed.safetensors");
    let checkpoint = dir.join("run.ckpt");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--synthetic",
            "3000,64,2,9",
            "--standardize",
            "--batch-size",
            "256",
            "--local-steps",
            "3000",
            "--global-steps",
            "3000",
            "--global-optimizer",
            "adamw",
            "--global-amsgrad",
            "--check-every",
            "250",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = run(&["-o", whole.to_str().unwrap()]);
    let o = bilevel(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));

    for (signal, status) in [("-INT", 130), ("-TERM", 143)] {
        let _ = std::fs::remove_file(&checkpoint);
        let args = run(&[
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--checkpoint-every",
            "500",
        ]);
        let code = interrupt(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &checkpoint,
            signal,
        );
        assert_eq!(code, Some(status), "{signal}");
        let args = run(&[
            "--resume",
            checkpoint.to_str().unwrap(),
            "-o",
            resumed.to_str().unwrap(),
        ]);
        let o = bilevel(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            tensors(&resumed) == tensors(&whole),
            "{signal}: the resumed model differs"
        );
    }
    // A resume against other options is refused, unless forced.
    let args = run(&["--resume", checkpoint.to_str().unwrap(), "--seed", "3"]);
    let o = bilevel(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the checkpoint was written for other data or options"),
        "{}",
        stderr(&o)
    );
    let args = run(&[
        "--resume",
        checkpoint.to_str().unwrap(),
        "--seed",
        "3",
        "--force",
    ]);
    assert!(
        bilevel(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .status
            .success()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn divergence_writes_the_last_finite_parameters_marked_diverged() {
    let dir = scratch("diverge");
    let model = dir.join("m.safetensors");
    let o = bilevel(&[
        "train",
        data("breast_cancer.csv").to_str().unwrap(),
        "--local-params",
        "all",
        "--local-lr",
        "1e38",
        "--check-every",
        "1",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("phase 'local' diverged at step"),
        "{}",
        stderr(&o)
    );
    let bytes = std::fs::read(&model).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header.metadata().as_ref().unwrap()["bilevel.diverged"],
        "true"
    );
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let weight = tensors.tensor("weight").unwrap();
    assert!(
        weight
            .data()
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_pipe_ends_predict_quietly() {
    let dir = scratch("pipe");
    let model = dir.join("m.safetensors");
    let o = bilevel(&[
        "train",
        data("digits.csv").to_str().unwrap(),
        "--one-vs-rest",
        "--backend",
        "cpu",
        "--global-steps",
        "5",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 1,797 rows × 10 probabilities: far more than a pipe holds, so the writer meets the
    // closed end.
    let mut child = Command::new(BIN)
        .args([
            "predict",
            model.to_str().unwrap(),
            data("digits.csv").to_str().unwrap(),
            "--one-vs-rest",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "status {:?}: {err}",
        output.status.code()
    );
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
