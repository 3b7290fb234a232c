//! `ringtun`: the site-to-site tunnel daemon.

fn main() {
    eprintln!("ringtun: not built yet (issue 4)");
    std::process::exit(2);
}
