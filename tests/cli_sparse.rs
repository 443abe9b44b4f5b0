//! The real binary on sparse data: LIBSVM and scipy NPZ files, generated sets, errors naming
//! their line, standardising without centring.

mod common;

use common::cli::*;

#[test]
fn heart_scale_trains_the_same_sparse_and_dense() {
    let dir = scratch("heart-sparse");
    let mut accuracies = Vec::new();
    for (layout, model) in [("on", "sparse.safetensors"), ("off", "dense.safetensors")] {
        let report_path = dir.join(format!("{layout}.json"));
        let model = dir.join(model);
        let o = bilevel(&[
            "train",
            data("heart_scale.libsvm").to_str().unwrap(),
            "--sparse",
            layout,
            "--compare",
            "--report",
            report_path.to_str().unwrap(),
            "-o",
            model.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("GPU vs CPU reference"),
            "{}",
            stdout(&o)
        );
        let r = report(&report_path);
        assert_eq!(
            r["configuration"]["sparse"].as_bool(),
            Some(layout == "on"),
            "{r}"
        );
        accuracies.push(r["metrics"]["train"][0]["accuracy"].as_f64().unwrap());
        // eval reads the file sparse or dense as asked, and agrees with the training report.
        let e = bilevel(&[
            "eval",
            model.to_str().unwrap(),
            data("heart_scale.libsvm").to_str().unwrap(),
            "--sparse",
            layout,
            "--json",
        ]);
        assert!(e.status.success(), "{}", stderr(&e));
        let metrics: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
        let eval_accuracy = metrics[0]["accuracy"].as_f64();
        assert_eq!(
            eval_accuracy,
            Some(accuracies[accuracies.len() - 1]),
            "{metrics}"
        );
    }
    assert!(accuracies[0] >= 0.84, "{accuracies:?}");
    assert_eq!(accuracies[0], accuracies[1]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// scipy's `save_npz` files, CSR and CSC, train as the LIBSVM file they were made from.
#[test]
fn heart_scale_trains_from_scipy_npz_csr_and_csc() {
    let dir = scratch("heart-npz");
    let y = data("heart_scale_y.npy");
    let mut losses = Vec::new();
    for file in [
        "heart_scale.libsvm",
        "heart_scale.npz",
        "heart_scale_csc.npz",
    ] {
        let report_path = dir.join(format!("{file}.json"));
        let mut args = vec![
            "train",
            "--backend",
            "cpu",
            "--sparse",
            "on",
            "--report",
            report_path.to_str().unwrap(),
        ];
        let path = data(file);
        args.push(path.to_str().unwrap());
        if file.ends_with(".npz") {
            args.extend(["--y", y.to_str().unwrap()]);
        }
        let o = bilevel(&args);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let r = report(&report_path);
        losses.push(r["metrics"]["train"][0]["log_loss"].as_f64().unwrap());
    }
    // The same rows and values in the same order: the same run, bit for bit.
    assert_eq!(losses[0], losses[1], "{losses:?}");
    assert_eq!(losses[0], losses[2], "{losses:?}");
    let o = bilevel(&["train", data("heart_scale.npz").to_str().unwrap()]);
    assert!(
        stderr(&o).contains("heart_scale.npz:0: the file has no label column"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sparse_input_errors_name_the_line() {
    let dir = scratch("sparse-errors");
    let repeated = file(&dir, "dup.libsvm", b"+1 1:0.5 3:1\n-1 2:1 2:0.5\n");
    let o = bilevel(&["train", repeated.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("dup.libsvm:2: feature index 2 appears twice"),
        "{}",
        stderr(&o)
    );
    let unsorted = file(&dir, "unsorted.libsvm", b"+1 1:0.5 3:1\n-1 3:1 2:0.5\n");
    let o = bilevel(&["train", unsorted.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("unsorted.libsvm:2: feature index 2 does not increase"),
        "{}",
        stderr(&o)
    );
    // Far wider than its nonzeros: fine sparse, refused dense.
    let wide = file(
        &dir,
        "wide.libsvm",
        b"+1 1:1 16000000:1\n-1 2:1\n".repeat(40).as_slice(),
    );
    let o = bilevel(&["train", wide.to_str().unwrap(), "--sparse", "off"]);
    assert!(
        stderr(&o).contains("stored dense would take") && stderr(&o).contains("--sparse"),
        "{}",
        stderr(&o)
    );
    let o = bilevel(&["train", wide.to_str().unwrap(), "--global-steps", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for spec in ["10,5,6,0", "10,0,1,0", "10,5,2", "a,5,2,0"] {
        let o = bilevel(&["train", "--synthetic-sparse", spec]);
        assert!(
            !o.status.success() && stderr(&o).contains("--synthetic-sparse"),
            "{spec}: {}",
            stderr(&o)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `generate` writes the rows `train --synthetic-sparse` trains on: the file trains the same.
#[test]
fn generated_files_train_as_the_generated_data() {
    let dir = scratch("generate");
    let path = dir.join("g.libsvm");
    let spec = "300,40,6,4";
    let o = bilevel(&[
        "generate",
        "--synthetic-sparse",
        spec,
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 300);
    // A label and 6 draws of columns, one kept of any drawn twice.
    let terms: Vec<usize> = text.lines().map(|l| l.split(' ').count() - 1).collect();
    assert!(terms.iter().all(|t| (1..=6).contains(t)), "{terms:?}");
    assert!(terms.iter().any(|&t| t < 6), "{terms:?}");
    let mut losses = Vec::new();
    for generated in [true, false] {
        let report_path = dir.join("r.json");
        let mut args = vec!["train", "--backend", "cpu", "--sparse", "on"];
        args.extend(["--report", report_path.to_str().unwrap()]);
        match generated {
            true => args.extend(["--synthetic-sparse", spec]),
            false => args.push(path.to_str().unwrap()),
        }
        let o = bilevel(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        losses.push(report(&report_path)["metrics"]["train"][0]["log_loss"].as_f64());
    }
    assert!(losses[0].is_some());
    assert_eq!(losses[0], losses[1]);
    let o = bilevel(&["generate", "-o", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sparse_data_is_standardised_without_centring() {
    let dir = scratch("sparse-std");
    let model = dir.join("m.safetensors");
    let o = bilevel(&[
        "train",
        "--synthetic-sparse",
        "600,400,12,3",
        "--standardize",
        "--compare",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("without centring"), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("GPU vs CPU reference"),
        "{}",
        stdout(&o)
    );
    let saved = bilevel::model_file::load_model(&model).unwrap();
    let s = saved.standardizer.unwrap();
    assert!(!s.centred);
    assert!(s.mean.iter().all(|&m| m == 0.0));
    assert!(s.std.iter().any(|&v| v != 1.0));
    let _ = std::fs::remove_dir_all(&dir);
}
