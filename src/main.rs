//! amitool: see, check and migrate Xen paravirtual (PV) AMIs to HVM.

fn main() -> std::process::ExitCode {
    amitool::cli::process::main()
}
