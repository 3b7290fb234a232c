//! Named, persistent network namespaces under /run/netns, exactly as
//! `ip netns` keeps them, and running code inside one.
//!
//! A namespace is a bind mount of a thread's `ns/net` onto
//! `/run/netns/NAME`, with `/run/netns` itself a shared mount point (as
//! iproute2 makes it) so that the bind mounts propagate to other mount
//! namespaces. Code runs inside a namespace on a dedicated thread that
//! `setns`es into it: network namespaces are per thread, so the caller's own
//! namespace never changes, and a socket opened on that thread keeps acting
//! in the namespace after the thread is gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, Result};
use crate::names::check_netns_name;

/// Where named namespaces live (the `ip netns` convention).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Serialises the one-time setup of /run/netns inside this process, so that
/// two threads adding namespaces at once do not both bind-mount it.
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

/// The path of a named namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// True if a namespace of that name is under /run/netns.
pub fn exists(name: &str) -> bool {
    check_netns_name(name).is_ok() && path(name).exists()
}

/// The names under /run/netns, sorted.
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("listing {NETNS_RUN_DIR}"),
                "CAP_SYS_ADMIN",
                e,
            ));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("listing {NETNS_RUN_DIR}"), "CAP_SYS_ADMIN", e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Creates a named namespace, like `ip netns add NAME`. Its loopback is
/// left down, as `ip` leaves it.
pub fn add(name: &str) -> Result<()> {
    check_netns_name(name)?;
    prepare_run_dir()?;
    let target = path(name);
    let action = format!("creating namespace {name}");
    // The mount point: an empty file, created exclusively so that two
    // callers cannot both believe they made the namespace.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::NetnsExists {
                name: name.to_string(),
            });
        }
        Err(e) => return Err(Error::io(action, "CAP_SYS_ADMIN", e)),
    }
    let bind = thread::scope(|s| {
        s.spawn(|| -> Result<(), Errno> {
            // Only this short-lived thread moves to the new namespace.
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
    });
    let result = match bind {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => Err(Error::io(action, "CAP_SYS_ADMIN", io::Error::from(errno))),
        Err(_) => Err(Error::Invalid(format!(
            "{action}: the setup thread panicked"
        ))),
    };
    if result.is_err() {
        let _ = fs::remove_file(&target);
    }
    result
}

/// Deletes a named namespace, like `ip netns del NAME`: unmounts and removes
/// /run/netns/NAME. The kernel destroys the namespace, and every link in it,
/// once no process or socket holds it any more.
pub fn delete(name: &str) -> Result<()> {
    check_netns_name(name)?;
    let target = path(name);
    if !target.exists() {
        return Err(Error::NoSuchNetns {
            name: name.to_string(),
        });
    }
    let action = format!("deleting namespace {name}");
    match umount2(&target, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a stale file); removing it is enough.
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(errno) => return Err(Error::io(action, "CAP_SYS_ADMIN", io::Error::from(errno))),
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(action, "CAP_SYS_ADMIN", e)),
    }
}

/// Opens a namespace's file: the fd that `setns` and the netlink attribute
/// IFLA_NET_NS_FD take.
pub fn open(name: &str) -> Result<OwnedFd> {
    check_netns_name(name)?;
    match File::open(path(name)) {
        Ok(file) => Ok(file.into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NoSuchNetns {
            name: name.to_string(),
        }),
        Err(e) => Err(Error::io(
            format!("opening namespace {name}"),
            "CAP_SYS_ADMIN",
            e,
        )),
    }
}

/// Runs `f` on a new thread that has entered the named namespace, and
/// returns its result. The calling thread's namespace never changes; a
/// panic in `f` is passed on to the caller.
///
/// Cost: one thread spawn and one `setns` per call, control path only.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let fd = open(name)?;
    thread::scope(|s| {
        let joined = s
            .spawn(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    Error::io(
                        format!("entering namespace {name}"),
                        "CAP_SYS_ADMIN",
                        io::Error::from(errno),
                    )
                })?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `f` inside the named namespace, or right here for `None`.
pub fn run_in_opt<T, F>(netns: Option<&str>, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    match netns {
        Some(name) => run_in(name, f),
        None => Ok(f()),
    }
}

/// Makes /run/netns exist and be a shared mount point, as iproute2 does:
/// try `--make-shared`; if it is not a mount point yet (EINVAL), bind-mount
/// it onto itself first.
fn prepare_run_dir() -> Result<()> {
    let _guard = RUN_DIR_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let action = format!("preparing {NETNS_RUN_DIR}");
    match fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(NETNS_RUN_DIR)
    {
        Ok(()) => {}
        Err(e) => return Err(Error::io(action, "CAP_SYS_ADMIN", e)),
    }
    let mut bound = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|errno| {
                    Error::io(action.clone(), "CAP_SYS_ADMIN", io::Error::from(errno))
                })?;
                bound = true;
            }
            Err(errno) => return Err(Error::io(action, "CAP_SYS_ADMIN", io::Error::from(errno))),
        }
    }
}
