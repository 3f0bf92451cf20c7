//! `branchrec`: see `branchrec --help`.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    branchrec::cli::main(branchrec::cli::Cli::parse())
}
