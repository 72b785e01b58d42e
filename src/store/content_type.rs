//! The Content-Type an object gets, chosen from its file name.
//!
//! A bucket behind a website or a CDN serves each object with its stored Content-Type; one
//! stored without serves as binary. s3fs sets it from the extension, and so does pailfs: on
//! every PUT and multipart upload, and on every copy that rewrites the metadata (chmod, chown,
//! utimes, xattr changes, and a rename to a name of another type). The type is a function of the
//! name alone (the `mime_guess` table), so a rename that keeps the type keeps the stored one
//! with a plain copy, and one that changes it (`.page.html.tmp` to `page.html`, as editors and
//! rsync save) stores the new name's type. A name with no known type gets no header, and S3's
//! default (`binary/octet-stream` on AWS) applies.

/// The Content-Type for `key`, from the extension of its last path component.
pub fn for_key(key: &str) -> Option<&'static str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    // A leading dot starts a hidden name, not an extension (`.html` is a file named "html").
    let ext = name.trim_start_matches('.').rsplit_once('.')?.1;
    mime_guess::from_ext(ext).first_raw()
}

/// Whether a rename from `src` to `dst` changes the type the name implies, so the copy must
/// rewrite the metadata instead of keeping the source's.
pub fn changes(src: &str, dst: &str) -> bool {
    for_key(src) != for_key(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_last_extension() {
        assert_eq!(for_key("site/index.html"), Some("text/html"));
        assert_eq!(for_key("a.tar.gz"), Some("application/gzip"));
        assert_eq!(for_key("photos/IMG.JPG"), Some("image/jpeg"));
        assert_eq!(for_key("dir.css/README"), None);
        assert_eq!(for_key(".html"), None);
        assert_eq!(for_key("notes.unknown-ext"), None);
    }

    #[test]
    fn a_rename_changes_the_type_only_when_the_names_differ_in_type() {
        assert!(changes(".index.html.Ab3xZ", "index.html"));
        assert!(!changes("a/x.txt", "b/y.txt"));
        assert!(!changes("x", "y"));
    }
}
