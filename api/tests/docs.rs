// SPDX-License-Identifier: Apache-2.0
//! `docs/shim.md` ("Agent API") says what the types say: its table lists exactly the calls of
//! `vrouter_api::agent::CALLS` with their request and reply types, and its interface-config
//! example is a valid `InterfaceConfig`.

use vrouter_api::agent::CALLS;
use vrouter_api::interface::InterfaceConfig;

fn agent_api_section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/shim.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = text
        .find("\n## Agent API")
        .expect("docs/shim.md has an Agent API section");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// `(method, path, request type, reply type)` of each table row; `–` becomes `-`.
fn table_rows(section: &str) -> Vec<(String, String, String, String)> {
    let untick = |s: &str| s.trim().trim_matches('`').replace('–', "-");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            let call = untick(cells[0]);
            let (method, path) = call.split_once(' ').expect("METHOD PATH");
            let types = cells.last().expect("a types column");
            let (req, reply) = types.split_once('→').expect("REQ → REPLY");
            (method.into(), path.into(), untick(req), untick(reply))
        })
        .collect()
}

#[test]
fn the_table_lists_every_call_with_its_types() {
    let mut documented = table_rows(&agent_api_section());
    let mut typed: Vec<(String, String, String, String)> = CALLS
        .iter()
        .map(|(m, p, q, r)| (m.to_string(), p.to_string(), q.to_string(), r.to_string()))
        .collect();
    documented.sort();
    typed.sort();
    assert_eq!(
        documented, typed,
        "docs/shim.md's Agent API table and CALLS disagree"
    );
}

#[test]
fn the_interface_config_example_parses_as_its_type() {
    let section = agent_api_section();
    let start = section.find("```json\n").expect("a json example") + 8;
    let len = section[start..].find("```").expect("closed");
    let example: serde_json::Value =
        serde_json::from_str(&section[start..start + len]).expect("the example is JSON");
    let typed: InterfaceConfig =
        serde_json::from_value(example.clone()).expect("the example is an InterfaceConfig");
    assert_eq!(serde_json::to_value(&typed).expect("serialises"), example);
}
