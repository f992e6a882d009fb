//! `tributary eval nab DIR OUT`: run the analyze function's detectors over
//! Numenta Anomaly Benchmark CSVs and write NAB results files and a summary.

use std::path::PathBuf;

/// Evaluations.
#[derive(clap::Subcommand)]
pub enum Eval {
    /// NAB: DIR holds `<folder>/<file>.csv` and `windows.json`; OUT receives
    /// `<folder>/tributary_<file>.csv` and `tributary_summary.{json,txt}`.
    Nab {
        /// Data directory (e.g. ../shared/data/nab).
        dir: PathBuf,
        /// Output directory.
        out: PathBuf,
    },
}

/// Run it and print the summary.
pub fn run(e: Eval) -> anyhow::Result<()> {
    match e {
        Eval::Nab { dir, out } => {
            let summary = tributary_analyze::nab::evaluate(&dir, &out).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", summary.to_text());
            Ok(())
        }
    }
}
