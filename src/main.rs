//! `branchrec`: see `branchrec --help`.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before anything touches a key: no core dumps and no ptrace by other processes of
    // the same user (the daemon and the CLI hold the unsealed KEK and signing key).
    branchrec::vault::harden_process();
    branchrec::cli::main(branchrec::cli::Cli::parse())
}
