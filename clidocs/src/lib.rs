//! Man pages and shell completions for every binary, generated from the binary's own clap
//! definition, so they never drift from `--help`.
//!
//! A binary calls [`generate_if_asked`] first thing in `main`: with `VROUTER_GENERATE_DOCS=DIR`
//! in its environment it writes `DIR/man/<name>.1`, `DIR/completions/bash/<name>`,
//! `DIR/completions/zsh/_<name>` and `DIR/completions/fish/<name>.fish` (the names each shell
//! looks for), and exits; otherwise it returns at once. `scripts/gen-docs.sh` runs every binary
//! that way before `cargo deb` puts the files in the package.

use clap::Command;
use std::path::{Path, PathBuf};

/// The environment variable that asks a binary for its docs: the output directory.
pub const ENV: &str = "VROUTER_GENERATE_DOCS";

/// Writes the docs of `cmd()` and exits (0, or 1 naming the file that could not be written)
/// when [`ENV`] is set; returns otherwise.
pub fn generate_if_asked(cmd: impl FnOnce() -> Command) {
    let Some(dir) = std::env::var_os(ENV) else {
        return;
    };
    let cmd = cmd();
    let name = cmd.get_name().to_string();
    match write_all(cmd, Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::exit(0);
        }
        Err((path, e)) => {
            eprintln!("{name}: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// Writes the man page and the completions of `cmd` under `dir`; the files written.
pub fn write_all(mut cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    let man = dir.join("man").join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| (man.clone(), e))?;
    write(&man, &page)?;
    let mut files = vec![man];
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let path = dir.join("completions").join(file);
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut script);
        write(&path, &script)?;
        files.push(path);
    }
    Ok(files)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let err = |e| (path.to_path_buf(), e);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    std::fs::write(path, bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_and_three_completions_name_the_binary_and_its_flags() {
        let cmd = Command::new("vrtest").about("A test binary").arg(
            clap::Arg::new("socket")
                .long("socket")
                .help("Control socket"),
        );
        let dir = std::env::temp_dir().join(format!("clidocs-{}", std::process::id()));
        let files = write_all(cmd, &dir).expect("written");
        assert_eq!(files.len(), 4);
        let man = std::fs::read_to_string(dir.join("man/vrtest.1")).expect("man page");
        assert!(man.starts_with(".ie \\n(.g .ds Aq"), "{man}");
        assert!(man.contains(".TH vrtest 1"), "{man}");
        assert!(man.contains("socket"), "{man}");
        let bash = std::fs::read_to_string(dir.join("completions/bash/vrtest")).expect("bash");
        assert!(bash.contains("--socket"), "{bash}");
        assert!(dir.join("completions/zsh/_vrtest").is_file());
        assert!(dir.join("completions/fish/vrtest.fish").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
