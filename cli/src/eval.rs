//! `tributary eval nab DIR OUT`: run the analyze function's detectors over
//! Numenta Anomaly Benchmark CSVs and write NAB results files and a summary.

use std::path::PathBuf;

/// Evaluations.
#[derive(clap::Subcommand)]
pub enum Eval {
    /// NAB: DIR holds `<folder>/<file>.csv` (any folder names) and
    /// `windows.json`; OUT receives `<folder>/tributary_<file>.csv` and
    /// `tributary_summary.{json,txt}`. Prints the standard, low-FP and
    /// low-FN profiles' scores.
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
            let evaluation = tributary_analyze::nab::evaluate(&dir, &out)?;
            println!("{}", evaluation.to_text());
            Ok(())
        }
    }
}
