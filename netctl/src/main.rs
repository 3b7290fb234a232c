//! `netctl`: `ip`'s grammar over the netctl library.

fn main() {
    eprintln!("netctl: not built yet (issue 2)");
    std::process::exit(2);
}
