//! `pailfs ls`: one level of a bucket or prefix as S3 itself lists it (ListObjectsV2 with a
//! `/` delimiter), without mounting: what another S3 client sees, as `aws s3 ls` prints it.

use crate::error::CliError;
use crate::store::{ListRequest, Pages};

pub fn command(a: crate::cli::LsArgs) -> Result<i32, CliError> {
    let resolved = crate::config::resolve_source(&a.source)?;
    let conn = resolved.connection.as_ref().map(|(_, c)| c);
    let s3 = crate::config::s3_settings(conn, &a.s3, &resolved.source.bucket)?;
    let rt = crate::config::command_runtime()?;
    let (bucket, prefix) = (&resolved.source.bucket, &resolved.source.prefix);
    rt.block_on(async {
        let store = crate::store::aws::AwsStore::connect(&s3, bucket).await;
        let mut pages = Pages::new(ListRequest::dir(prefix));
        while let Some(page) = pages
            .next(&store)
            .await
            .map_err(|e| CliError::failed(format!("cannot list s3://{bucket}/{prefix}"), e))?
        {
            for p in &page.prefixes {
                println!("{:>12}  {}", "PRE", shown(p, prefix));
            }
            for o in &page.objects {
                println!("{:>12}  {}", o.size, shown(&o.key, prefix));
            }
        }
        Ok(0)
    })
}

/// A key relative to the listed prefix, with control characters escaped.
fn shown(key: &str, prefix: &str) -> String {
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    rest.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
        .replace("\\'", "'")
        .replace("\\\"", "\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_relative_and_escaped() {
        assert_eq!(shown("p/a b.txt", "p/"), "a b.txt");
        assert_eq!(shown("p/x\ny", "p/"), "x\\ny");
        assert_eq!(shown("other", "p/"), "other");
    }
}
