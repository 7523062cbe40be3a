//! `brine-master completions` and `brine-master man`: shell completion scripts and manual pages,
//! generated from the command line's own definition so they never fall behind it.

use std::path::Path;

use anyhow::Context;

/// Writes the completion script for `shell` to standard output.
pub fn completions(mut command: clap::Command, shell: clap_complete::Shell) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
}

/// Writes the manual pages into `out`: `NAME.1` and one per subcommand (`NAME-SUBCOMMAND.1`).
pub fn man_pages(command: clap::Command, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let name = command.get_name().to_owned();
    clap_mangen::generate_to(command, out)
        .with_context(|| format!("write the manual pages into {}", out.display()))?;
    println!(
        "wrote {name}.1 and a page per subcommand into {}; read one with\n  man {}",
        out.display(),
        out.join(format!("{name}.1")).display()
    );
    Ok(())
}
