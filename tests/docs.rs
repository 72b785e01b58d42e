//! The documentation's claims point at tests: every test named in brackets in
//! docs/SEMANTICS.md exists, so a renamed or removed test cannot leave a claim unbacked. And
//! every file in tests/ is a module of the one test binary, so a test cannot exist in a file
//! that is never built (its name would still satisfy the first check).

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// The names inside `[...]` groups of backquoted identifiers.
fn cited(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for group in doc.split('[').skip(1) {
        let Some(inside) = group.split(']').next() else {
            continue;
        };
        if !inside.trim_start().starts_with('`') {
            continue;
        }
        for part in inside.split('`').skip(1).step_by(2) {
            if !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(part.to_string());
            }
        }
    }
    names
}

#[test]
fn every_test_cited_in_semantics_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/SEMANTICS.md")).unwrap();
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    let names = cited(&doc);
    assert!(names.len() > 40, "found only {} citations", names.len());
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !code.contains(&format!("fn {n}(")) && !code.contains(&format!("fn {n}<")))
        .collect();
    assert!(
        missing.is_empty(),
        "cited in docs/SEMANTICS.md but not found: {missing:?}"
    );
}

#[test]
fn every_test_file_is_a_module() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let entry = std::fs::read_to_string(tests.join("tests.rs")).unwrap();
    let mut unlinked = Vec::new();
    for e in std::fs::read_dir(&tests).unwrap() {
        let p = e.unwrap().path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        if name != "tests" && !entry.lines().any(|l| l == format!("mod {name};")) {
            unlinked.push(name.to_string());
        }
    }
    assert!(
        unlinked.is_empty(),
        "files in tests/ without a `mod NAME;` line in tests/tests.rs, so never built: {unlinked:?}"
    );
}

#[test]
fn citations_are_found_in_bracket_groups_only() {
    let doc = "text `not_a_test` and [`one_test`, `two_tests`] and [a link](x)";
    assert_eq!(cited(doc), vec!["one_test", "two_tests"]);
}
