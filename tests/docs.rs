//! The project's docs stay true: every file under `src/` is named in DESIGN.md's module map,
//! and every relative link in the Markdown docs points at a file of the repository.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The "Modules" section of DESIGN.md.
fn module_map() -> String {
    let design = std::fs::read_to_string(root().join("DESIGN.md")).unwrap();
    let start = design
        .find("\n## Modules")
        .expect("DESIGN.md has a Modules section");
    let rest = &design[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

#[test]
fn every_source_file_is_in_the_module_map() {
    let map = module_map();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found {} files under src/", files.len());
    let missing: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .filter(|rel| !map.contains(&format!("`{rel}`")) && !map.contains(&format!("`src/{rel}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "DESIGN.md's module map does not name: {missing:?}"
    );
}

#[test]
fn the_module_map_names_no_file_that_is_gone() {
    let map = module_map();
    let src = root().join("src");
    let mut gone = Vec::new();
    for part in map.split('`').skip(1).step_by(2) {
        if part.ends_with(".rs") && !part.contains(' ') {
            let rel = part.strip_prefix("src/").unwrap_or(part);
            if !src.join(rel).exists() && !root().join(part).exists() {
                gone.push(part.to_string());
            }
        }
    }
    assert!(
        gone.is_empty(),
        "DESIGN.md names files that do not exist: {gone:?}"
    );
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut broken = Vec::new();
    let mut docs = vec![
        root().join("README.md"),
        root().join("DESIGN.md"),
        root().join("BENCHMARKS.md"),
    ];
    for dir in ["docs/decisions", "spec", "spark"] {
        if let Ok(rd) = std::fs::read_dir(root().join(dir)) {
            docs.extend(
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "md")),
            );
        }
    }
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !doc.parent().unwrap().join(target).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
        assert!(
            !text.contains("../shared/"),
            "{} links outside the repository (../shared/)",
            doc.display()
        );
    }
    assert!(broken.is_empty(), "links that do not resolve: {broken:?}");
}
