//! `bilevel devices` and `bilevel check`: what the machine offers, and whether it computes
//! what the CPU reference computes.

use std::sync::Arc;

use bilevel::gpu::{GpuContext, adapters};
use clap::Args;

/// Options of `bilevel devices`.
#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bilevel devices`.
pub fn devices(args: &DevicesArgs) -> anyhow::Result<()> {
    let list = adapters();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no adapters: install a GPU driver, or Mesa's `mesa-vulkan-drivers libvulkan1`");
    }
    for a in &list {
        println!("{} {}", if a.chosen { "*" } else { " " }, a.name);
        println!(
            "    backend {}, {} , driver {}",
            a.backend, a.device_type, a.driver
        );
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dimension",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_storage >> 10,
            a.max_invocations_per_workgroup,
            a.max_workgroups_per_dimension
        );
        // The tiled kernels (many outputs) hand values out from 8 lanes of every subgroup.
        let tiled = |min: u32| if min >= 8 { "; the tiled kernels" } else { "" };
        let subgroups = match (a.subgroups, a.subgroup_sizes, a.rows_workgroup) {
            (false, ..) => "no".to_string(),
            (true, (min, max), _) if min == max => format!(
                "yes ({min} lanes: the one-output step holds rows in registers{})",
                tiled(min)
            ),
            (true, (min, max), Some(wg)) => format!(
                "yes ({min}–{max} lanes, varying: the one-output step in workgroups of {wg}{})",
                tiled(min)
            ),
            (true, (min, max), None) => format!("yes ({min}–{max} lanes, varying{})", tiled(min)),
        };
        println!(
            "    timestamps {}, shader f16 {}, subgroups {subgroups}",
            yes(a.timestamps),
            yes(a.shader_f16),
        );
        for p in &a.plans {
            println!("    plan for {}: {}", p.shape, p.route);
            println!("        {}", p.why);
        }
        for (what, why) in &a.dropped {
            println!("    verification dropped {what}: {why}");
        }
    }
    println!(
        "* = the adapter bilevel uses (WGPU_BACKEND, WGPU_ADAPTER_NAME and WGPU_POWER_PREF choose)"
    );
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Runs `bilevel check`; returns whether every comparison passed.
pub fn check() -> anyhow::Result<bool> {
    let context = Arc::new(GpuContext::new()?);
    println!("checking {} against the CPU reference", context.describe());
    println!(
        "{:<56} {:>11} {:>11} {:>9} {:>9}  result",
        "what", "max |Δ|", "max rel", "atol", "rtol"
    );
    let results = bilevel::selfcheck::run(context.clone())?;
    for r in &results {
        println!(
            "{:<56} {:>11.3e} {:>11.3e} {:>9.1e} {:>9.1e}  {}",
            r.what,
            r.max_abs,
            r.max_rel,
            r.atol,
            r.rtol,
            if r.pass { "PASS" } else { "FAIL" }
        );
    }
    for path in bilevel::selfcheck::paths_not_here(&context) {
        println!("not on this adapter: {path}");
    }
    // What verification found while the checks ran (and earlier runs remembered): a dropped
    // route is one the runs here avoid, so the checks above ran the route taken instead.
    for (what, verdict) in context.verdicts() {
        if !verdict.pass {
            println!("verification dropped {what}: {}", verdict.detail);
        }
    }
    let passed = results.iter().all(|r| r.pass);
    println!(
        "{}",
        if passed {
            "all checks passed"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    Ok(passed)
}
