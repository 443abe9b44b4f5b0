//! The arithmetic probe, `shaders/probe_fma.wgsl`: the adapter's practical f32 rate, which
//! bounds what a lockstep sweep can gain over separate runs (`bilevel bench --sweep`). Its
//! output is checked against [`fma_probe_sum`], its CPU twin, so a rate it reports is of work
//! it did.

use super::context::GpuContext;
use super::probe::{OutputProbe, read_back};
use crate::{Error, Result};

const FILE: &str = "probe_fma.wgsl";
/// Invocations a workgroup (the shader's `WG`).
const WG: u32 = 64;
/// The shader's `ITERATIONS`.
const ITERATIONS: u32 = 256;
/// Chains an invocation runs (six vec4) and rounds an iteration.
const CHAINS: usize = 24;
const ROUNDS: u32 = 4;
/// Flops one invocation does.
const INVOCATION_FLOPS: u64 = 2 * CHAINS as u64 * (ROUNDS * ITERATIONS) as u64;

/// Invocation `i`'s sum, as `probe_fma.wgsl` computes it (up to the order of its additions
/// and whether the driver fuses its multiply-adds).
pub fn fma_probe_sum(i: u32) -> f32 {
    let m = 1.0 - 1e-4 * (i % 64) as f32;
    let c = 1e-3 * (i % 7) as f32;
    (0..CHAINS)
        .map(|q| {
            let mut a = 0.01 * q as f32;
            for _ in 0..ROUNDS * ITERATIONS {
                a = a.mul_add(m, c);
            }
            a
        })
        .sum()
}

/// The probe, built once and dispatched as often as it is timed.
pub struct FmaProbe {
    context: std::sync::Arc<GpuContext>,
    probe: OutputProbe,
    groups: u32,
}

impl FmaProbe {
    /// The probe sized to about `flops` (at least one workgroup, at most the grid's limit in
    /// one dimension).
    pub fn new(context: std::sync::Arc<GpuContext>, flops: u64) -> Result<Self> {
        let limit = context.limits.max_compute_workgroups_per_dimension;
        let groups = flops
            .div_ceil(INVOCATION_FLOPS * u64::from(WG))
            .clamp(1, u64::from(limit)) as u32;
        let constants = [("WG", f64::from(WG)), ("ITERATIONS", f64::from(ITERATIONS))];
        let probe = OutputProbe::new(&context, FILE, &constants, u64::from(groups * WG) * 4);
        context.check("building the arithmetic probe")?;
        Ok(Self {
            context,
            probe,
            groups,
        })
    }

    /// Flops one dispatch does.
    pub fn flops(&self) -> u64 {
        INVOCATION_FLOPS * u64::from(self.groups * WG)
    }

    /// Dispatches the probe once and waits for it.
    pub fn run(&self) -> Result<()> {
        self.probe.submit(&self.context, self.groups);
        self.context.wait("running the arithmetic probe")
    }

    /// Reads what the last dispatch wrote and compares each invocation's sum with
    /// [`fma_probe_sum`]: an error names the first that differs.
    pub fn check(&self) -> Result<()> {
        let out = &self.probe.out;
        let bytes = read_back(&self.context, out, out.size(), FILE)?;
        let sums: &[f32] = bytemuck::cast_slice(&bytes);
        for (i, &got) in sums.iter().enumerate() {
            let want = fma_probe_sum(i as u32);
            if (got - want).abs() > 1e-4 + 1e-4 * want.abs() {
                return Err(Error::Gpu {
                    adapter: self.context.adapter_name().into(),
                    context: "checking the arithmetic probe".into(),
                    message: format!(
                        "invocation {i} summed {got}, its CPU twin {want}: the probe did not run its {} rounds",
                        ROUNDS * ITERATIONS
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ_q of chain q's closed form after n rounds: a₀ + n·c for m = 1, else
    /// L + (a₀ − L)·mⁿ with L = c / (1 − m).
    fn closed_form(i: u32) -> f64 {
        let m = 1.0 - 1e-4 * f64::from(i % 64);
        let c = 1e-3 * f64::from(i % 7);
        let n = ROUNDS * ITERATIONS;
        (0..CHAINS)
            .map(|q| {
                let a0 = 0.01 * q as f64;
                if m == 1.0 {
                    a0 + f64::from(n) * c
                } else {
                    let limit = c / (1.0 - m);
                    limit + (a0 - limit) * m.powi(n as i32)
                }
            })
            .sum()
    }

    #[test]
    fn the_twin_runs_every_round() {
        // i = 64: m = 1, c = 10⁻³; 62: m = 0.9938, c = 6·10⁻³; 63: c = 0, the chains decay.
        for i in [0, 1, 62, 63, 64, 1000] {
            let (got, want) = (f64::from(fma_probe_sum(i)), closed_form(i));
            assert!(
                (got - want).abs() <= 1e-4 + 1e-4 * want.abs(),
                "invocation {i}: {got} vs {want}"
            );
        }
    }
}
