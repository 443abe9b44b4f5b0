//! `bilevel sweep` through the real binary: the table, the report, the plot, the refit, the
//! exactness of every (configuration, fold) model against `bilevel train --fold`, and bad grids.

mod common;

use common::cli::*;

/// The options every run here shares: short phases on the bundled breast-cancer data.
const BASE: &[&str] = &[
    "--local-steps",
    "10",
    "--global-steps",
    "40",
    "--check-every",
    "10",
    "--seed",
    "4",
];

fn with_base<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(BASE.iter().copied()).collect()
}

#[test]
fn a_sweep_prints_its_table_and_writes_report_plot_and_refit_model() {
    let dir = scratch("sweep");
    let (report, plot, model) = (
        dir.join("sweep.json"),
        dir.join("sweep.svg"),
        dir.join("best.safetensors"),
    );
    let out = bilevel(&with_base(&[
        "sweep",
        "--grid",
        "global-lr=0.02,0.2",
        "--grid",
        "local-params=bias,features:0..5",
        "--folds",
        "3",
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--refit",
        "-o",
        model.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("4 configuration(s) × 3 fold(s) = 12 models in 1 lockstep run(s)"),
        "{}",
        stderr(&out)
    );
    let table = stdout(&out);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| (l.starts_with("   0") || l.starts_with(" * 0")) && l.contains(" ± "))
        .collect();
    assert_eq!(rows.len(), 4, "4 configurations:\n{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with(" *")).count(),
        1,
        "one best:\n{table}"
    );
    assert!(table.contains("refit on all 569 rows"), "{table}");

    let json = common::cli::report(&report);
    let configs = json["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 4);
    let means: Vec<f64> = configs
        .iter()
        .map(|c| c["metric_mean"].as_f64().unwrap())
        .collect();
    let best = json["best"].as_u64().unwrap() as usize;
    assert!(
        means.iter().all(|&m| means[best] <= m),
        "{means:?}, best {best}"
    );
    for c in configs {
        let folds = c["folds"].as_array().unwrap();
        assert_eq!(folds.len(), 3);
        for f in folds {
            assert_eq!(f["phases"].as_array().unwrap().len(), 2);
        }
    }
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    let (weight, bias) = tensors(&model);
    assert_eq!((weight.len(), bias.len()), (30 * 4, 4));

    // Configuration 3 (global-lr=0.2, local-params=features:0..5) on fold 2, trained alone
    // by `bilevel train`, has the sweep's checks bit for bit (JSON keeps every f64 bit).
    let alone = dir.join("alone.json");
    let out = bilevel(&with_base(&[
        "train",
        "--global-lr",
        "0.2",
        "--local-params",
        "features:0..5",
        "--folds",
        "3",
        "--fold",
        "2",
        "--report",
        alone.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let alone = common::cli::report(&alone);
    let swept = &configs[3]["folds"][2];
    assert_eq!(swept["fold"], 2);
    assert_eq!(
        swept["phases"][1]["checks"], alone["phases"][1]["checks"],
        "the sweep's model and `train --fold` alone"
    );
    assert_eq!(swept["phases"][0]["checks"], alone["phases"][0]["checks"]);
}

#[test]
fn a_sparse_sweep_runs_on_the_gpu_and_each_fold_is_its_train_fold() {
    let dir = scratch("sweep-sparse");
    let (data, report, alone) = (
        dir.join("rows.svm"),
        dir.join("sweep.json"),
        dir.join("alone.json"),
    );
    let data = data.to_str().unwrap();
    let generate = ["generate", "--synthetic-sparse", "600,80,8,3", "-o", data];
    assert!(bilevel(&generate).status.success());
    let out = bilevel(&with_base(&[
        "sweep",
        data,
        "--sparse",
        "on",
        "--grid",
        "global-lr=0.05,0.3",
        "--grid",
        "local-params=bias,features:0..20",
        "--folds",
        "3",
        "--report",
        report.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("12 models in 1 lockstep run(s)") && stderr(&out).contains("on gpu"),
        "{}",
        stderr(&out)
    );
    let out = bilevel(&with_base(&[
        "train",
        data,
        "--sparse",
        "on",
        "--global-lr",
        "0.3",
        "--local-params",
        "features:0..20",
        "--folds",
        "3",
        "--fold",
        "1",
        "--report",
        alone.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let (json, alone) = (common::cli::report(&report), common::cli::report(&alone));
    let swept = &json["configurations"][3]["folds"][1];
    assert_eq!(swept["fold"], 1);
    for phase in 0..2 {
        assert_eq!(
            swept["phases"][phase]["checks"], alone["phases"][phase]["checks"],
            "phase {phase}: the sparse sweep's model and `train --fold` alone"
        );
    }
}

#[test]
fn a_single_hold_out_sweeps_on_the_validation_rows() {
    // One axis from a sweep file's [sweep] table.
    let dir = scratch("sweep-file");
    let grid = file(
        &dir,
        "grid.toml",
        b"[sweep]\nglobal-weight-decay = [0, 0.01, 0.1]\n",
    );
    let out = bilevel(&with_base(&[
        "sweep",
        "--backend",
        "cpu",
        "--config",
        grid.to_str().unwrap(),
        "--validation",
        "0.25",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 configuration(s) × 1 fold(s) = 3 models"));
    // One fold: the spread over folds is 0 (3 configurations and the best's line).
    assert_eq!(
        stdout(&out).matches("± 0.00000").count(),
        4,
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_grids_are_refused_clearly_and_nothing_is_written() {
    let dir = scratch("sweep-bad");
    let report = dir.join("never.json");
    let r = report.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--grid", "global-lrr=0.1"],
            "not an option of bilevel train",
        ),
        (&["--grid", "global-lr=fast"], "'fast' is not a number"),
        (&["--grid", "global-lr="], "the axis has no values"),
        (&["--grid", "global-lr=0.1,0.1"], "given twice"),
        (&["--grid", "global-lr=-1"], "learning rate"),
        (&["--grid", "local-params=features:0..99"], "outside 0..30"),
        (
            &["--grid", "global-lr=0.1", "-o", "m.safetensors"],
            "add --refit",
        ),
        (
            &["--grid", "global-lr=0.1", "--fold", "1", "--folds", "3"],
            "--fold",
        ),
        (
            &["--grid", "global-lr=0.1", "--folds", "1"],
            "single hold-out",
        ),
        (
            &["--grid", "global-lr=0.1", "--folds", "1000"],
            "1000 folds of 569 rows",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["sweep", "--backend", "cpu", "--report", r];
        all.extend_from_slice(args);
        let out = bilevel(&with_base(&all));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{args:?}: expected '{message}' in: {}",
            stderr(&out)
        );
        assert!(!report.exists(), "{args:?} wrote a report");
    }
}
