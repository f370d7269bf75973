//! Counter paths: `/` or `/seg1/seg2/…`, with a depth limit.

use crate::error::{Error, Result};

/// The root path, level 0.
pub const ROOT: &str = "/";

/// The deepest `max_path_depth` a configuration may set.
pub(crate) const MAX_PATH_DEPTH: usize = 16;

/// The longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// Checks `path` against the path rules and returns its level.
///
/// - `/` is level 0; otherwise the level is the number of `/` characters.
/// - A trailing slash opens a new, empty level (`/news/` is level 2).
/// - An empty segment anywhere but last (`//x`, `/a//b`) is invalid.
/// - At most [`MAX_PATH_BYTES`] bytes, no ASCII control characters, and at
///   most `max_depth` levels.
pub fn validate_path(path: &str, max_depth: usize) -> Result<usize> {
    let invalid = |reason| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("a path must not be empty; use \"/\" for the root"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("a path must be at most 512 bytes"));
    }
    if !path.starts_with('/') {
        return Err(invalid("a path must start with \"/\""));
    }
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err(invalid("a path must not contain control characters"));
    }
    if path == ROOT {
        return Ok(0);
    }
    let body = &path[1..];
    let depth = body.split('/').count();
    let inner_empty = body.split('/').take(depth - 1).any(str::is_empty);
    if inner_empty {
        return Err(invalid("only the last segment of a path may be empty"));
    }
    if depth > max_depth {
        return Err(Error::PathTooDeep {
            path: path.to_owned(),
            depth,
            max: max_depth,
        });
    }
    Ok(depth)
}

/// The parent of a valid path: `None` for the root, `/` for a level-1 path,
/// otherwise everything before the last `/` (`/a/b` and `/a/` both give `/a`).
pub fn parent(path: &str) -> Option<&str> {
    if path == ROOT {
        return None;
    }
    match path.rfind('/') {
        Some(0) | None => Some(ROOT),
        Some(i) => Some(&path[..i]),
    }
}

/// The proper ancestors of a valid path, nearest first, ending with `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(parent(path), |p| parent(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_slashes() {
        assert_eq!(validate_path("/", 2).unwrap(), 0);
        assert_eq!(validate_path("/news", 2).unwrap(), 1);
        assert_eq!(validate_path("/news/sport", 2).unwrap(), 2);
        assert_eq!(validate_path("/news/", 2).unwrap(), 2);
        assert_eq!(validate_path("/a/b/c/d", 16).unwrap(), 4);
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["", "news", "//x", "/a//b", "//", "/a\nb", "/a\u{7f}"] {
            assert!(
                matches!(validate_path(bad, 16), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "x".repeat(MAX_PATH_BYTES));
        assert!(matches!(
            validate_path(&long, 2),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            validate_path("/news/sport/football", 2),
            Err(Error::PathTooDeep {
                depth: 3,
                max: 2,
                ..
            })
        ));
        assert!(matches!(
            validate_path("/news/sport/", 2),
            Err(Error::PathTooDeep { depth: 3, .. })
        ));
    }

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a/"), Some("/a"));
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").count(), 0);
    }
}
