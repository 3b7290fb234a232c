//! Gateway A's configuration socket against clients that misbehave:
//! `uapi: bad input refused, nothing changed` (requests that are wrong,
//! partial, huge or stalled, written on the raw socket: each gets an errno
//! or is closed, the daemon keeps answering, and `wg showconf` is as
//! before) and `uapi: permission refused` (a user that is not root, also
//! as root of a user namespace of its own, is refused by the file's mode
//! and, with the mode opened up, by the peer credentials; root is served).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::super::checks::Ctx;
use super::{BAD_INPUT, Keys, PERMISSION, Sites3, Wg, iface, socket_path, verdict};
use crate::process;

/// How long an answer may take (a stalled client ahead holds the socket
/// for 5 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(12);
/// How long the daemon may take to close a client that sent a few bytes
/// and then nothing (its deadline is 5 s).
const STALL_CLOSED_WITHIN: Duration = Duration::from_secs(10);
/// An unprivileged uid and gid (Debian's nobody and nogroup).
const NOBODY: &str = "65534";

/// What came back for a request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A whole answer (ends with a blank line).
    Answer(String),
    /// The daemon closed the connection, after this long, having sent
    /// this (perhaps nothing).
    Closed(Duration, String),
    /// Neither within the deadline.
    Nothing(String),
}

/// Sends `bytes` (then shuts the write side if `close`) and reads until
/// an answer ends, the daemon closes, or `within` passes. A write the
/// daemon cut short by closing is not an error: what it answered first is
/// still read.
fn ask(path: &Path, bytes: &[u8], close: bool, within: Duration) -> Result<Outcome> {
    let mut s =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    s.set_write_timeout(Some(within))?;
    let started = Instant::now();
    if s.write_all(bytes).is_ok() && close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(Outcome::Nothing(String::from_utf8_lossy(&got).into()));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Ok(Outcome::Closed(
                    started.elapsed(),
                    String::from_utf8_lossy(&got).into(),
                ));
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\n\n") {
                    return Ok(Outcome::Answer(String::from_utf8_lossy(&got).into()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Outcome::Nothing(String::from_utf8_lossy(&got).into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset after the daemon closed on us.
            Err(_) => {
                return Ok(Outcome::Closed(
                    started.elapsed(),
                    String::from_utf8_lossy(&got).into(),
                ));
            }
        }
    }
}

/// The errno of an answer (`errno=-22` gives -22).
fn errno(answer: &str) -> Option<i64> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|v| v.parse().ok())
}

/// One hostile request: what is sent, whether the write side is then
/// closed, and whether only a close is the right outcome (no answer).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    close: bool,
    must_close: bool,
}

fn cases(base64_key: &str) -> Vec<Case> {
    let case = |name, bytes: Vec<u8>| Case {
        name,
        bytes,
        close: false,
        must_close: false,
    };
    let mut hex = b"set=1\nprivate_key=zz".to_vec();
    hex.extend([b'0'; 62]);
    hex.extend(b"\n\n");
    vec![
        case("unknown key", b"set=1\nno_such_key=1\n\n".to_vec()),
        case("malformed hex key", hex),
        case(
            "key in base64",
            format!("set=1\npublic_key={base64_key}\n\n").into_bytes(),
        ),
        case("port 70000", b"set=1\nlisten_port=70000\n\n".to_vec()),
        case(
            "a good line, then a bad one",
            b"set=1\nlisten_port=51821\nno_such_key=1\n\n".to_vec(),
        ),
        Case {
            name: "set without its blank line, then closed",
            bytes: b"set=1\nlisten_port=51821\n".to_vec(),
            close: true,
            must_close: false,
        },
        case("1 MiB without a newline", vec![b'x'; 1 << 20]),
        Case {
            name: "a few bytes, then nothing",
            bytes: b"get=".to_vec(),
            close: false,
            must_close: true,
        },
    ]
}

/// `uapi: bad input refused, nothing changed`, on gateway A's socket.
pub fn bad_input(ctx: &mut Ctx, s: &Sites3, wg: &Wg, keys: &Keys) -> Result<()> {
    if !ctx.wants(BAD_INPUT) {
        return Ok(());
    }
    ctx.interrupted()?;
    let a = iface('a');
    let path = socket_path(&a);
    let before = wg.showconf(&s.gw_a, &a)?;
    let mut wrong = Vec::new();
    let mut figs = Vec::new();
    for c in cases(&keys.b.public_key) {
        ctx.interrupted()?;
        let within = if c.must_close {
            STALL_CLOSED_WITHIN
        } else {
            ANSWER_WITHIN
        };
        let outcome = ask(&path, &c.bytes, c.close, within)?;
        let (ok, what) = match &outcome {
            Outcome::Answer(a) => {
                let e = errno(a);
                (
                    !c.must_close && matches!(e, Some(-22) | Some(-71)),
                    format!("errno={}", e.map_or("?".into(), |e| e.to_string())),
                )
            }
            Outcome::Closed(after, sent) => (
                errno(sent).is_none_or(|e| e != 0),
                format!(
                    "closed after {:.1} s{}",
                    after.as_secs_f64(),
                    errno(sent).map_or(String::new(), |e| format!(" (errno={e})"))
                ),
            ),
            Outcome::Nothing(got) => (
                false,
                format!("neither answered nor closed in {within:?} ({got:?})"),
            ),
        };
        let get = ask(&path, b"get=1\n\n", false, ANSWER_WITHIN)?;
        let serving = matches!(&get, Outcome::Answer(g) if errno(g) == Some(0) && g.contains("listen_port=51820"));
        let now = wg.showconf(&s.gw_a, &a)?;
        let same = now == before;
        if !ok || !serving || !same {
            wrong.push(format!(
                "{}: {what}{}{}",
                c.name,
                if serving {
                    String::new()
                } else {
                    format!("; the next get got {get:?}")
                },
                if same {
                    String::new()
                } else {
                    format!("; showconf changed to {now:?}")
                }
            ));
        }
        figs.push(format!("{}: {what}", c.name));
    }
    let figure = format!(
        "{}; a get answered after each, wg showconf unchanged",
        figs.join(", ")
    );
    verdict(ctx, BAD_INPUT, &wrong, &figure);
    Ok(())
}

/// How a client that is not allowed is refused.
#[derive(Clone, Copy)]
enum Refusal {
    /// By the socket file's mode: the connect fails.
    Mode,
    /// By the daemon, on the peer credentials: closed unanswered.
    Closed,
}

/// The socket's mode set to `mode` until dropped, then 0600 again.
struct ModeFor {
    path: PathBuf,
}

impl ModeFor {
    fn set(path: &Path, mode: u32) -> Result<ModeFor> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
        Ok(ModeFor {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ModeFor {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
    }
}

/// `uapi: permission refused`: `wg show A` as nobody (uid 65534, no
/// groups), and as nobody become root of a user namespace of its own
/// (`unshare -Ur`), is refused: with the socket at 0600 by the file's
/// mode ("Permission denied"); with it opened to everyone, by the peer
/// credentials the daemon checks (closed unanswered: "Protocol error" to
/// wg, or SIGPIPE if the close came first). Root in gateway A's
/// namespace is served.
pub fn permission(ctx: &mut Ctx, s: &Sites3, wg: &Wg) -> Result<()> {
    if !ctx.wants(PERMISSION) {
        return Ok(());
    }
    ctx.interrupted()?;
    let (Some(setpriv), Some(unshare)) = (
        ringtun_tests::find_in_path("setpriv"),
        ringtun_tests::find_in_path("unshare"),
    ) else {
        ctx.table
            .skip(PERMISSION, "setpriv or unshare (util-linux) is not on PATH");
        return Ok(());
    };
    let a = iface('a');
    let path = socket_path(&a);
    let wg_path = wg.path.to_string_lossy().into_owned();
    let unshare_path = unshare.to_string_lossy().into_owned();
    let nobody = ["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"];
    let run_as_nobody = |userns: bool, tail: &[&str]| -> Result<std::process::Output> {
        let mut args = nobody.to_vec();
        if userns {
            args.extend([unshare_path.as_str(), "-Ur", "--"]);
        }
        args.extend(tail);
        process::output_in(&s.gw_a, &setpriv, &args, &[], ANSWER_WITHIN)
    };
    let mut wrong = Vec::new();
    let mut figs = Vec::new();

    // The user namespace is made (so that a refusal below is the socket's).
    let id = run_as_nobody(true, &["id", "-u"])?;
    let inside = String::from_utf8_lossy(&id.stdout).trim().to_string();
    if !id.status.success() || inside != "0" {
        wrong.push(format!(
            "nobody's user namespace: `id -u` gave {inside:?} ({}; {})",
            id.status,
            String::from_utf8_lossy(&id.stderr).trim()
        ));
    }
    let public = wg.run(&s.gw_a, &["show", &a, "public-key"])?;
    let public = public.trim();
    // `why`: what wg says. `Closed`: the daemon closed the connection
    // unanswered; wg says "Protocol error", or dies of SIGPIPE if the
    // close came before its request was written.
    let mut refused = |label: &str, userns: bool, why: Refusal| -> Result<()> {
        let out = run_as_nobody(userns, &[&wg_path, "show", &a])?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let sigpipe = out.status.signal() == Some(libc::SIGPIPE);
        if sigpipe && stderr.is_empty() {
            stderr = "killed by SIGPIPE: closed on".into();
        }
        let said = match why {
            Refusal::Mode => stderr.contains("Permission denied"),
            Refusal::Closed => stderr.contains("Protocol error") || sigpipe,
        };
        let ok = !out.status.success() && said && !stdout.contains(public);
        if !ok {
            wrong.push(format!(
                "{label}: {} with {stderr:?}{}",
                out.status,
                if stdout.contains(public) {
                    "; it printed the interface"
                } else {
                    ""
                }
            ));
        }
        figs.push(format!("{label}: {stderr:?}"));
        Ok(())
    };
    refused("nobody", false, Refusal::Mode)?;
    refused(
        "nobody as root of its own user namespace",
        true,
        Refusal::Mode,
    )?;
    {
        let _open = ModeFor::set(&path, 0o666)?;
        refused("nobody, socket 0666", false, Refusal::Closed)?;
        refused(
            "nobody in a user namespace, socket 0666",
            true,
            Refusal::Closed,
        )?;
    }
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        wrong.push(format!("the socket's mode is {mode:o} after the check"));
    }
    let root = wg.output(&s.gw_a, &["show", &a])?;
    let root_out = String::from_utf8_lossy(&root.stdout);
    if !root.status.success() || !root_out.contains(public) {
        wrong.push(format!(
            "root in gw-a: {} {:?}",
            root.status,
            String::from_utf8_lossy(&root.stderr).trim()
        ));
    }
    let figure = format!(
        "{}; root in gw-a: {}",
        figs.join(", "),
        if root.status.success() {
            "served"
        } else {
            "REFUSED"
        }
    );
    verdict(ctx, PERMISSION, &wrong, &figure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_read_from_answers() {
        assert_eq!(errno("errno=-22\n\n"), Some(-22));
        assert_eq!(errno("listen_port=1\nerrno=0\n\n"), Some(0));
        assert_eq!(errno(""), None);
    }

    #[test]
    fn the_cases_are_what_they_say() {
        let c = cases("QUJD");
        assert!(c.iter().all(|c| !c.bytes.is_empty()));
        let huge = c.iter().find(|c| c.name.starts_with("1 MiB")).unwrap();
        assert_eq!(huge.bytes.len(), 1 << 20);
        assert!(!huge.bytes.contains(&b'\n'));
        let hex = c.iter().find(|c| c.name == "malformed hex key").unwrap();
        assert_eq!(hex.bytes.len(), "set=1\nprivate_key=".len() + 64 + 2);
        assert_eq!(c.iter().filter(|c| c.must_close).count(), 1);
    }
}
