//! The README prints the API surface; keep it exactly in step with the code.

use mirador_router::api::SURFACE;

#[test]
fn the_readme_api_surface_is_the_code_api_surface() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with("| metrics |") || l.starts_with("| logs |") || l.starts_with("| traces |"))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = SURFACE
        .iter()
        .map(|e| {
            let op = e.op.map_or("".to_string(), |op| format!("`{}`", op.as_str()));
            format!("| {} | {} | {} | `{}` | {op} |", e.signal, e.access.as_str(), e.method_names(), e.pattern)
        })
        .collect();
    assert_eq!(rows, expected, "README rows, then the code's:\n{}", expected.join("\n"));
}
