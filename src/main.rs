//! The `spate` binary: parses the command line and hands off to [`spate::cli`].

fn main() -> std::process::ExitCode {
    spate::cli::main()
}
