//! Shell completions and man pages, generated from a binary's own clap definition: every
//! binary has `completions SHELL` and `man [--dir DIR]`, so packages (`deploy/package.sh`) and
//! users make them from the binary they run and they never drift from its flags.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `completions SHELL`: the script on stdout.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man [--dir DIR]`: the top page on stdout, or every page (one per subcommand) into DIR.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `NAME.1` and one `NAME-SUBCOMMAND….1` per subcommand into this directory (made if
    /// missing) instead of printing the top page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, args: &CompletionsArgs, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, out);
}

/// Renders the man pages of `cmd`: to `out` (top page only) or into `--dir`; returns the files
/// written (empty when printed).
pub fn man(cmd: clap::Command, args: &ManArgs, out: &mut dyn Write) -> std::io::Result<Vec<PathBuf>> {
    match &args.dir {
        None => {
            clap_mangen::Man::new(cmd).render(out)?;
            Ok(Vec::new())
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            // Every page's footer names the program and its version (subcommands have none).
            let source = format!("{} {}", cmd.get_name(), cmd.get_version().unwrap_or_default());
            let mut written = Vec::new();
            render_tree(cmd, &source, dir, &mut written)?;
            Ok(written)
        }
    }
}

/// One page for `cmd` (named by its path of subcommands, `a-b-c.1`) and one for each visible
/// subcommand below it. `help` is left out: clap adds it to every level.
fn render_tree(mut cmd: clap::Command, source: &str, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    cmd.build();
    if cmd.get_about().is_none() {
        // A page's NAME line is `name - about` (whatis, apropos); a subcommand without a doc
        // comment gets its command line.
        let line = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name()).to_string();
        cmd = cmd.about(line);
    }
    let page = clap_mangen::Man::new(cmd.clone()).source(source.trim_end());
    let path = dir.join(page.get_filename());
    let mut bytes = Vec::new();
    page.render(&mut bytes)?;
    std::fs::write(&path, bytes)?;
    written.push(path);
    // `build` named every subcommand below: display name `a-b-c` (the file), bin name `a b c`
    // (the synopsis).
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        render_tree(sub.clone(), source, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, clap::Parser)]
    #[command(name = "demo", version, about = "A demo")]
    struct Demo {
        #[command(subcommand)]
        cmd: DemoCmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum DemoCmd {
        /// Tenants.
        #[command(subcommand)]
        Tenant(TenantCmd),
        #[command(hide = true)]
        Secret,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TenantCmd {
        /// Create one.
        Create {
            #[arg(long)]
            name: String,
        },
        List,
    }

    #[test]
    fn man_dir_has_one_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let args = ManArgs { dir: Some(dir.path().to_path_buf()) };
        let written = man(Demo::command(), &args, &mut std::io::sink()).unwrap();
        let mut names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["demo-tenant-create.1", "demo-tenant-list.1", "demo-tenant.1", "demo.1"]);
        let create = std::fs::read_to_string(dir.path().join("demo-tenant-create.1")).unwrap();
        assert!(create.contains("\\-\\-name"), "{create}");
        assert!(create.contains("demo\\-tenant\\-create"), "{create}");
        // The NAME line of a subcommand without a doc comment is its command line; every
        // footer names the program.
        let list = std::fs::read_to_string(dir.path().join("demo-tenant-list.1")).unwrap();
        assert!(list.contains("demo\\-tenant\\-list \\- demo tenant list"), "{list}");
        assert!(create.contains(&format!("\"demo {}\"", env!("CARGO_PKG_VERSION"))), "{create}");
    }

    #[test]
    fn bash_completion_names_the_binary_and_its_subcommands() {
        let mut out = Vec::new();
        completions(Demo::command(), &CompletionsArgs { shell: clap_complete::Shell::Bash }, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("complete -F _demo"), "{script}");
        assert!(script.contains("tenant"), "{script}");
    }
}
