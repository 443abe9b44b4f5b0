//! Lockstep runs of several models on the GPU: the model table the δ kernels read, each
//! model's optimizer scalars, and the evaluations, snapshots and masks per model.
//!
//! The models are the outputs of one wide run, stepped by the tiled or separate kernels (the
//! other paths are for one output); what differs per model rides in small tables: the model
//! table (bound where the kernels read pos_weight: its first words are the positive weights),
//! the optimizers' argument arrays and the step scalars pushed per model to the ring.

use super::*;
use crate::backend::ModelEvaluation;
use crate::cpu::check_lockstep_optimizers;
use crate::lockstep::{Lockstep, evaluate_models};

/// What a run of models stepping together adds to a run.
pub(super) struct LockstepRun {
    pub(super) layout: Lockstep,
    /// Where the model table holds the planned batches' δ scales, `folds` per batch.
    pub(super) scales_at: u32,
    /// δ scales per batch: one per fold (one without folds).
    pub(super) folds: u32,
    /// The planned batches' rows, which the evaluations sum by model.
    pub(super) batches: Vec<Vec<u32>>,
    /// Each model's optimizer in the current phase.
    pub(super) optimizers: Vec<Optimizer>,
}

/// The model table's layout, and the words it starts with.
pub(super) struct ModelTable {
    /// Positive weights (M·o), each model's held-out fold (M, −1: none), each row's fold
    /// (n, where models hold folds out).
    pub(super) head: Vec<f32>,
    pub(super) held_out_at: u32,
    pub(super) folds_at: u32,
    pub(super) scales_at: u32,
    pub(super) folds: u32,
    /// Words in all: the head, then room for the scales of a plan (at most n + 2 batches).
    pub(super) words: u64,
}

impl ModelTable {
    pub(super) fn new(layout: &Lockstep, pos_weight: &[f32], n: usize) -> Self {
        let mut head = layout.wide_pos_weight(pos_weight);
        let held_out_at = head.len() as u32;
        head.extend(layout.held_out.iter().map(|h| h.map_or(-1.0, |f| f as f32)));
        let folds_at = match &layout.fold_of_row {
            Some(folds) => {
                let at = head.len() as u32;
                head.extend(folds.iter().map(|&f| f as f32));
                at
            }
            None => NO_TABLE,
        };
        let folds = layout
            .fold_of_row
            .as_ref()
            .map_or(1, |f| f.iter().max().map_or(1, |&m| m + 1));
        let scales_at = head.len() as u32;
        let words = head.len() as u64 + (n as u64 + 2) * u64::from(folds);
        Self {
            head,
            held_out_at,
            folds_at,
            scales_at,
            folds,
            words,
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.words * 4
    }
}

impl Run {
    /// Models stepped together (1 for a plain run).
    pub(super) fn models(&self) -> usize {
        self.lockstep.as_ref().map_or(1, |l| l.layout.models)
    }

    /// Pushes step `t`'s optimizer scalars with `blocks` gradient partials to the ring: one
    /// per model of a lockstep run; returns their offset.
    pub(super) fn push_step(&mut self, t: u64, blocks: u32) -> Result<u32> {
        let args: Vec<StepArgs> = match (&self.lockstep, &self.phase) {
            (Some(l), Some(_)) => l
                .optimizers
                .iter()
                .map(|o| StepArgs {
                    blocks,
                    ..StepArgs::new(o, t)
                })
                .collect(),
            (None, Some((o, _))) => vec![StepArgs {
                blocks,
                ..StepArgs::new(o, t)
            }],
            (_, None) => return Err(Error::Config("no phase started".into())),
        };
        Ok(self.ring.push_slice(&args))
    }

    /// Ring slots [`Run::push_step`] takes.
    pub(super) fn step_slots(&self) -> u64 {
        self.ring
            .slots_for((self.models() * std::mem::size_of::<StepArgs>()) as u64)
    }

    /// Bytes of the optimizers' step scalars a dispatch binds.
    pub(super) fn step_bytes(&self) -> u64 {
        (self.models() * std::mem::size_of::<StepArgs>()) as u64
    }

    /// Writes the planned batches' δ scales to the model table: per batch and fold, 1 /
    /// (the batch's rows outside the fold · outputs), as a run of one model computes it.
    pub(super) fn write_scales(&mut self, queue: &wgpu::Queue, batches: &[Vec<u32>]) {
        let Some(l) = &mut self.lockstep else { return };
        let o = l.layout.outputs as f64;
        let mut scales = Vec::with_capacity(batches.len() * l.folds as usize);
        for batch in batches {
            for f in 0..l.folds {
                let count = match &l.layout.fold_of_row {
                    Some(folds) => batch.iter().filter(|&&r| folds[r as usize] != f).count(),
                    None => batch.len(),
                };
                scales.push(if count == 0 {
                    0.0
                } else {
                    (1.0 / (count as f64 * o)) as f32
                });
            }
        }
        queue.write_buffer(
            &self.pos_weight,
            u64::from(l.scales_at) * 4,
            bytemuck::cast_slice(&scales),
        );
        l.batches = batches.to_vec();
    }
}

impl GpuBackend {
    /// The kernels a lockstep run steps with: the tiled ones where the adapter has them, else
    /// the separate ones, or whichever of the two was asked for.
    pub(super) fn lockstep_kernels(&self) -> Result<StepKernels> {
        match self.kernels {
            StepKernels::Auto if self.context.usable_profile().tiled_kernels() => {
                Ok(StepKernels::Tiled)
            }
            StepKernels::Auto | StepKernels::Separate => Ok(StepKernels::Separate),
            StepKernels::Tiled => Ok(StepKernels::Tiled),
            other => Err(Error::Config(format!(
                "{other:?} kernels step one model; models stepped together take the tiled or the separate kernels"
            ))),
        }
    }

    /// [`Backend::begin_lockstep_phase`] (and `begin_phase`, one optimizer): the optimizers'
    /// arguments (one per model), the mask, the optimizer state zeroed.
    pub(super) fn begin(&mut self, optimizers: &[Optimizer], mask: &ParamMask) -> Result<()> {
        check_lockstep_optimizers(optimizers, self.run()?.models())?;
        let ctx = Arc::clone(&self.context);
        let counters = Arc::clone(&self.counters);
        let max_binding = self.max_binding;
        let run = self.run_mut()?;
        if mask.0.len() != run.n_params {
            return Err(Error::Shape(format!(
                "mask has {} entries for {} parameters",
                mask.0.len(),
                run.n_params
            )));
        }
        let amsgrad = optimizers
            .iter()
            .any(|o| matches!(o, Optimizer::Adam(c) if c.amsgrad));
        if amsgrad && !run.amsgrad_room {
            return Err(Error::TooLarge {
                what: "adam's v and amsgrad's v_max (one binding)".into(),
                size: 2 * run.n_params as u64 * 4,
                limit_name: "max_storage_buffer_binding_size",
                limit: max_binding,
            });
        }
        write_mask(&ctx.queue, &run.mask, &mask.0);
        let n = run.n_params;
        let (d, outputs) = match &run.lockstep {
            Some(l) => (run.d as u32, l.layout.outputs as u32),
            None => (1, u32::MAX),
        };
        let mut sgd = Vec::new();
        let mut adam = Vec::new();
        for optimizer in optimizers {
            match optimizer {
                Optimizer::Sgd(c) => sgd.push(SgdArgs {
                    d,
                    outputs,
                    ..SgdArgs::new(c, n)
                }),
                Optimizer::Adam(c) => adam.push(AdamArgs {
                    d,
                    outputs,
                    ..AdamArgs::new(c, n)
                }),
            }
        }
        if !sgd.is_empty() {
            ctx.queue
                .write_buffer(&run.sgd_args, 0, bytemuck::cast_slice(&sgd));
        }
        if !adam.is_empty() {
            ctx.queue
                .write_buffer(&run.adam_args, 0, bytemuck::cast_slice(&adam));
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("begin phase"),
            });
        for buffer in [&run.momentum, &run.m, &run.v] {
            encoder.clear_buffer(buffer, 0, None);
        }
        submit(&ctx, &counters, encoder);
        // A phase training some features only: its steps sum those columns' gradients.
        run.rows_train = (run.rows_step.as_ref()).and_then(|step| step.train_for(&mask.0[..run.d]));
        run.tiled_train_partial = match (run.path, ctx.kernels.tiled(&ctx.device)) {
            (StepPath::Tiled, Some(tiled)) => {
                trained_columns(&mask.0, run.d, run.o).map(|columns| {
                    let x_texture = run.reads_textures();
                    tiled.partial_over(run.o as u32, run.x_stride as u32 / 4, x_texture, columns)
                })
            }
            _ => None,
        };
        run.phase = Some((optimizers[0].clone(), mask.0.clone()));
        if let Some(l) = &mut run.lockstep {
            l.optimizers = optimizers.to_vec();
        }
        self.begin_sparse_phase(&mask.0)?;
        ctx.wait("starting a phase")
    }

    /// [`Backend::evaluate_lockstep`] of a lockstep run: the batch's losses and gradient read
    /// back and summed per model on the host, as a run of one model sums them.
    pub(super) fn evaluate_models(&mut self, batch: usize) -> Result<Vec<ModelEvaluation>> {
        let loss = if self.is_sparse() {
            self.sparse_compute(batch, Compute::Gradient)?;
            self.read_sparse(batch, SparseOutput::Loss)?
        } else {
            self.compute_gradient(batch)?;
            self.read_chunked(batch, |c| &c.loss)?
        };
        let run = self.run()?;
        let grad = self.read_f32(&run.grad, run.n_params)?;
        let (Some(l), Some((_, mask))) = (&run.lockstep, &run.phase) else {
            return Err(Error::Config("no lockstep phase started".into()));
        };
        let rows = l
            .batches
            .get(batch)
            .ok_or_else(|| Error::Config(format!("batch {batch} was not planned")))?;
        Ok(evaluate_models(&l.layout, rows, &loss, &grad, mask, run.d))
    }

    /// Copies the parameters of the models marked in `which` between the parameters and
    /// their snapshot (`restore`: from the snapshot).
    pub(super) fn copy_models(&mut self, which: &[bool], restore: bool) -> Result<()> {
        let run = self.run()?;
        let Some(l) = &run.lockstep else {
            return Err(Error::Config("not a lockstep run".into()));
        };
        if which.len() != l.layout.models {
            return Err(Error::Shape(format!(
                "{} flags for {} models",
                which.len(),
                l.layout.models
            )));
        }
        let (from, to) = if restore {
            (&run.saved, &run.params)
        } else {
            (&run.params, &run.saved)
        };
        let mut encoder =
            self.context
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("model snapshot"),
                });
        for m in (0..l.layout.models).filter(|&m| which[m]) {
            for r in l.layout.param_ranges(m, run.d) {
                let (at, bytes) = (r.start as u64 * 4, r.len() as u64 * 4);
                encoder.copy_buffer_to_buffer(from, at, to, at, bytes);
            }
        }
        submit(&self.context, &self.counters, encoder);
        self.context.check("copying models' parameters")
    }

    /// [`Backend::set_mask`]: the phase goes on with `mask`.
    pub(super) fn replace_mask(&mut self, mask: &ParamMask) -> Result<()> {
        let ctx = Arc::clone(&self.context);
        let run = self.run_mut()?;
        let Some((_, current)) = &mut run.phase else {
            return Err(Error::Config("no phase started".into()));
        };
        if mask.0.len() != current.len() {
            return Err(Error::Shape(format!(
                "mask has {} entries for {} parameters",
                mask.0.len(),
                current.len()
            )));
        }
        current.clone_from(&mask.0);
        write_mask(&ctx.queue, &run.mask, &mask.0);
        ctx.check("replacing the mask")
    }
}
