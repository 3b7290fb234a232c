//! `netctl`: `ip`'s grammar over the netctl library.

fn main() {
    eprintln!("netctl: the command line comes in the next commit; the library is usable");
    std::process::exit(2);
}
