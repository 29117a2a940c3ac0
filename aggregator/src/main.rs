//! `vantage-aggregator`: the aggregator's command line (`cli/`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
