//! The README prints the API surface and the shared-cluster forms; keep
//! both exactly in step with the code.

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

#[test]
fn the_readme_cluster_forms_are_the_code_cluster_forms() {
    use mirador_router::api::{VictoriaTenant, CLUSTER_FORMS};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<String> = readme.lines().filter(|l| l.starts_with("| cluster |")).map(str::to_string).collect();
    let expected: Vec<String> = CLUSTER_FORMS
        .iter()
        .map(|form| {
            let path = form.path(form.pattern, VictoriaTenant { account: 0, project: 0 }).replacen("0:0", "<id>", 1);
            format!("| cluster | {} | `{}` | `{path}` |", form.service.as_str(), form.pattern)
        })
        .collect();
    assert_eq!(rows, expected, "README rows, then the code's:\n{}", expected.join("\n"));
}
