//! `bilevel generate`: generated data written as LIBSVM text, so that other tools (the
//! comparison scripts in `scripts/`) train on exactly the rows bilevel generates.

use std::path::PathBuf;

use bilevel::Error;
use bilevel::io::{Table, write_atomically, write_libsvm};
use clap::Args;

use super::data::{synthetic, synthetic_sparse};

/// Options of `bilevel generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A planted linear model: N rows, D features uniform in ±1, O outputs.
    #[arg(
        long,
        value_name = "N,D,O,SEED",
        required_unless_present = "synthetic_sparse"
    )]
    pub synthetic: Option<String>,
    /// rcv1-shaped sparse rows: N rows of NNZ_PER_ROW nonzeros among D features, one output
    /// (as `train --synthetic-sparse`).
    #[arg(
        long,
        value_name = "N,D,NNZ_PER_ROW,SEED",
        conflicts_with = "synthetic"
    )]
    pub synthetic_sparse: Option<String>,
    /// The LIBSVM file to write (replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Runs `bilevel generate`.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let table: Table = match (&args.synthetic, &args.synthetic_sparse) {
        (Some(spec), _) => synthetic(spec)?,
        (None, Some(spec)) => synthetic_sparse(spec)?,
        (None, None) => {
            return Err(Error::Config(
                "--synthetic or --synthetic-sparse says what to write".into(),
            )
            .into());
        }
    };
    let o = table.o();
    let y = table.y.unwrap_or_default();
    write_atomically(&args.output, |out| {
        write_libsvm(out, &table.x, (table.n, table.d, o), &y, &args.output)
    })?;
    eprintln!(
        "bilevel: wrote {} rows × {} features → {} to {}",
        table.n,
        table.d,
        o,
        args.output.display()
    );
    Ok(())
}
