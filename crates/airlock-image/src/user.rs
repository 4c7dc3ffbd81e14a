//! The image's `User`: resolved through the image's own /etc/passwd and /etc/group, read as
//! data from the unpacked layer directories (whiteouts and opaque directories honoured, no
//! symlink ever followed: a link could point out of the image into the host).

use airlock_model::plan::ROOTFUL_UID_COUNT;
use airlock_model::spec::ImageUser;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most of a passwd/group file that is read.
const MAX_FILE: u64 = 1 << 20;

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    crate::unpack::xattr_get(dir, crate::unpack::OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

/// The file at `rel` (components, e.g. `["etc", "passwd"]`) as the overlay of `layers` (top
/// layer first) shows it, if it is a regular file reached through real directories only.
pub fn read_file(layers: &[PathBuf], rel: &[&str]) -> Option<String> {
    let (last, dirs) = rel.split_last()?;
    for layer in layers {
        let mut cur = layer.clone();
        // An opaque directory on the way hides every lower layer below it.
        let mut hides_lower = false;
        let mut present = true;
        for d in dirs {
            cur.push(d);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => hides_lower |= is_opaque(&cur),
                Ok(m) if is_whiteout(&m) => return None,
                // A symlink (or a file) where a directory should be: never followed.
                Ok(_) => return None,
                Err(_) => {
                    present = false;
                    break;
                }
            }
        }
        if !present {
            continue;
        }
        cur.push(last);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_file() => {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&cur)
                    .ok()?;
                let mut s = String::new();
                f.take(MAX_FILE).read_to_string(&mut s).ok()?;
                return Some(s);
            }
            Ok(_) => return None,
            Err(_) if hides_lower => return None,
            Err(_) => {}
        }
    }
    None
}

/// The entry of `file` (passwd or group format) whose field `key` (0: name, 2: id) is `value`.
fn entry<'a>(file: Option<&'a str>, key: usize, value: &str) -> Option<Vec<&'a str>> {
    file?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && !l.starts_with('#') && f[key] == value).then_some(f)
    })
}

fn id(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A home directory airlock can mount the user's writable home on: absolute, plain, and not
/// one of the sandbox's own places.
fn usable_home(h: &str) -> bool {
    let p = Path::new(h);
    p.is_absolute()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
        && p.components().count() >= 2
        && ![
            "/proc",
            "/sys",
            "/dev",
            "/etc",
            "/tmp",
            "/run",
            "/workspace",
            "/usr",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
        ]
        .iter()
        .any(|r| p.starts_with(r))
}

/// The image's `User` (`name`, `uid`, `name:group`, `uid:gid`, …) as who runs: None for an
/// empty or root user (the sandbox keeps its unprivileged `agent`), else the uid/gid inside,
/// the name and the home from the image's passwd. A missing group is the user's primary one
/// (from passwd), else the uid's own number, never root's.
pub fn resolve(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Option<ImageUser>, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(None);
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let pw =
        match id(u) {
            Some(n) => entry(passwd, 2, &n.to_string()),
            None => Some(entry(passwd, 0, u).ok_or_else(|| {
                format!("the image's user {u:?} is not in the image's /etc/passwd")
            })?),
        };
    let uid = match id(u) {
        Some(n) => n,
        None => pw
            .as_ref()
            .and_then(|f| id(f[2]))
            .ok_or_else(|| format!("the image's /etc/passwd has no valid uid for {u:?}"))?,
    };
    if uid == 0 {
        return Ok(None);
    }
    let gid = match g.filter(|g| !g.is_empty()) {
        Some(g) => match id(g) {
            Some(n) => n,
            None => entry(group, 0, g).and_then(|f| id(f[2])).ok_or_else(|| {
                format!("the image's group {g:?} is not in the image's /etc/group")
            })?,
        },
        None => pw
            .as_ref()
            .and_then(|f| f.get(3).copied().and_then(id))
            .unwrap_or(uid),
    };
    if uid >= ROOTFUL_UID_COUNT || gid >= ROOTFUL_UID_COUNT {
        return Err(format!(
            "the image's user {user:?} (uid {uid}, gid {gid}) is outside the ids a sandbox maps (0-{})",
            ROOTFUL_UID_COUNT - 1
        ));
    }
    let name = pw
        .as_ref()
        .map(|f| f[0].to_string())
        .filter(|n| !n.is_empty());
    let home = pw
        .as_ref()
        .and_then(|f| f.get(5).copied())
        .filter(|h| usable_home(h))
        .map(str::to_string)
        .unwrap_or_else(|| format!("/home/{uid}"));
    Ok(Some(ImageUser {
        uid,
        gid,
        name,
        home,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1234:2345:app:/home/app:/bin/sh\n\
                          www:x:33:33:www:/var/www:/bin/false\n\
                          odd:x:1500:1500::/:/bin/sh\n\
                          admin:x:0:0::/root:/bin/sh\n\
                          big:x:70000:70000::/home/big:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:2345:\n";

    fn r(u: &str) -> Result<Option<ImageUser>, String> {
        resolve(u, Some(PASSWD), Some(GROUP))
    }

    fn iu(uid: u32, gid: u32, name: Option<&str>, home: &str) -> Option<ImageUser> {
        Some(ImageUser {
            uid,
            gid,
            name: name.map(str::to_string),
            home: home.into(),
        })
    }

    #[test]
    fn names_and_numbers_resolve_through_the_images_own_files() {
        assert_eq!(r("app"), Ok(iu(1234, 2345, Some("app"), "/home/app")));
        assert_eq!(r("1234"), Ok(iu(1234, 2345, Some("app"), "/home/app")));
        assert_eq!(r("app:staff"), Ok(iu(1234, 50, Some("app"), "/home/app")));
        assert_eq!(r("www:7"), Ok(iu(33, 7, Some("www"), "/var/www")));
        // A number the image does not list: its own group and a home of its own.
        assert_eq!(r("4321:4321"), Ok(iu(4321, 4321, None, "/home/4321")));
        assert_eq!(r("4321"), Ok(iu(4321, 4321, None, "/home/4321")));
        // A home airlock cannot mount its writable home on is replaced.
        assert_eq!(r("odd"), Ok(iu(1500, 1500, Some("odd"), "/home/1500")));
        // Root, by name, number or another name for uid 0, and empty: the default user.
        for u in ["", " ", "root", "0", "0:0", "admin", "root:staff"] {
            assert_eq!(r(u), Ok(None), "{u:?}");
        }
        // Without passwd/group files only numbers work.
        assert_eq!(
            resolve("1001:1002", None, None),
            Ok(iu(1001, 1002, None, "/home/1001"))
        );
        assert!(resolve("app", None, None).is_err());
    }

    #[test]
    fn unknown_or_unmappable_users_are_errors() {
        for u in ["nosuch", "app:nosuch", "big", "70000", "1000:99999"] {
            let e = r(u).expect_err(u);
            assert!(e.contains("image's"), "{u}: {e}");
        }
    }

    #[test]
    fn files_are_read_through_the_layers_without_following_symlinks() {
        let tmp = std::env::temp_dir().join(format!("airlock-user-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let (top, mid, low) = (tmp.join("top"), tmp.join("mid"), tmp.join("low"));
        for d in [&top, &mid, &low] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let outside = tmp.join("outside");
        fs::create_dir_all(&outside).expect("mkdir");
        fs::write(outside.join("passwd"), "host:x:1:1::/:/bin/sh\n").expect("write");
        fs::create_dir_all(low.join("etc")).expect("mkdir");
        fs::write(low.join("etc/passwd"), "low\n").expect("write");
        fs::write(low.join("etc/group"), "lowgroup\n").expect("write");
        let layers = vec![top.clone(), mid.clone(), low.clone()];
        let read = |name| read_file(&layers, &["etc", name]);
        assert_eq!(
            read("passwd").as_deref(),
            Some("low\n"),
            "from the lowest layer"
        );
        // A higher layer's file wins.
        fs::create_dir_all(mid.join("etc")).expect("mkdir");
        fs::write(mid.join("etc/passwd"), "mid\n").expect("write");
        assert_eq!(read("passwd").as_deref(), Some("mid\n"));
        assert_eq!(read("group").as_deref(), Some("lowgroup\n"));
        // A symlinked file, or a symlinked /etc pointing out of the image: never followed.
        std::os::unix::fs::symlink(outside.join("passwd"), mid.join("etc/group")).expect("symlink");
        assert_eq!(read("group"), None);
        std::os::unix::fs::symlink(&outside, top.join("etc")).expect("symlink");
        assert_eq!(read("passwd"), None);
        fs::remove_file(top.join("etc")).expect("rm");
        // An opaque /etc in the top layer hides the lower ones' files.
        fs::create_dir_all(top.join("etc")).expect("mkdir");
        if crate::unpack::xattr_set(&top.join("etc"), crate::unpack::OPAQUE_XATTR, b"y").is_ok() {
            assert_eq!(read("passwd"), None, "opaque");
        }
        let _ = fs::remove_dir_all(&tmp);
    }
}
