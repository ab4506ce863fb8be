//! The cnibox front door: logging setup and argv[0] dispatch.

use cnibox::applets::{self, AppletInfo, Entry};
use cnibox::cni::{skel, version};

fn main() {
    init_logging();
    applets::register_with_invoker();
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("cnibox");
    let code = match applets::find(invoked_as) {
        Some(info) => run_applet(info, &argv[1..]),
        None => front_door(&argv),
    };
    std::process::exit(code);
}

/// CNIBOX_LOG sets the level filter (env_logger syntax, default "warn");
/// CNIBOX_LOG_FILE appends to a file instead of stderr, since runtimes
/// often discard a plugin's stderr.
fn init_logging() {
    let filter = std::env::var("CNIBOX_LOG").unwrap_or_else(|_| "warn".into());
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter).format_timestamp(None);
    if let Ok(path) = std::env::var("CNIBOX_LOG_FILE") {
        match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                builder.target(env_logger::Target::Pipe(Box::new(file)));
                builder.format(|buf, record| {
                    use std::io::Write;
                    writeln!(
                        buf,
                        "[{} {} pid={}] {}",
                        record.level(),
                        record.target(),
                        std::process::id(),
                        record.args()
                    )
                });
            }
            Err(e) => eprintln!("cnibox: cannot open log file {path}: {e}"),
        }
    }
    builder.init();
}

fn applet_help(info: &AppletInfo) -> String {
    let mut s = format!("{} — {}\n\n", info.name, info.about);
    match info.entry {
        Entry::Plugin(_) => {
            s += &format!(
                "A CNI plugin: run by a container runtime with CNI_COMMAND and the network\nconfiguration on stdin. Spec versions: {}.\n",
                version::SUPPORTED.join(", ")
            );
            if !info.keys.is_empty() {
                s += "\nConfiguration keys:\n";
                for (key, what) in info.keys {
                    s += &format!("  {key:<22} {what}\n");
                }
            }
        }
        Entry::Tool(_) => s += &format!("Usage: cnibox {} [ARGS...] (see its --help)\n", info.name),
    }
    s
}

fn run_applet(info: &AppletInfo, args: &[String]) -> i32 {
    if matches!(args.first().map(String::as_str), Some("--help") | Some("-h")) && !matches!(info.entry, Entry::Tool(_))
    {
        print!("{}", applet_help(info));
        return 0;
    }
    match info.entry {
        Entry::Tool(main) => main(args),
        Entry::Plugin(applet) => match (args.is_empty(), info.args_main) {
            (true, _) => skel::run(info.name, applet),
            (false, Some(main)) => main(args),
            (false, None) => {
                eprintln!("{}: a CNI plugin takes no arguments (try --help)", info.name);
                2
            }
        },
    }
}

fn front_door(argv: &[String]) -> i32 {
    // Node tools, not plugins: handled here so they are never in the applet
    // table (and so never installed as plugin links).
    match argv.get(1).map(String::as_str) {
        Some("doctor") => return cnibox::doctor::main(&argv[2..]),
        Some("install") => return cnibox::install::main(&argv[2..]),
        Some("pause") => return cnibox::pause::main(&argv[2..]),
        _ => {}
    }
    // `cnibox APPLET ...` hands every later argument (--help included) to the applet.
    if let Some(info) = argv.get(1).and_then(|a| applets::find(a)) {
        return run_applet(info, &argv[2..]);
    }
    let cli = clap::Command::new("cnibox")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The CNI plugin suite in one binary. Link it under a plugin name, or run `cnibox APPLET`.")
        .arg(
            clap::Arg::new("list")
                .long("list")
                .action(clap::ArgAction::SetTrue)
                .help("Print the applet names, one per line"),
        )
        .arg(clap::Arg::new("applet").value_name("APPLET").help("The applet to run"))
        .arg(
            clap::Arg::new("args")
                .value_name("ARGS")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .help("Arguments for the applet"),
        )
        .after_help(format!(
            "Applets: {}\n\nNode tools:\n  cnibox install --help  install cnibox and its plugin links into a directory\n  cnibox doctor --help   check this node's plugins, configs, kernel and leaked state\n  cnibox pause           wait for SIGTERM (a DaemonSet's main container)",
            applets::APPLETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ));
    let matches = match cli.try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    if matches.get_flag("list") {
        for a in applets::APPLETS {
            println!("{}", a.name);
        }
        return 0;
    }
    let Some(name) = matches.get_one::<String>("applet") else {
        eprintln!("cnibox {}: run `cnibox --help` or `cnibox --list`", env!("CARGO_PKG_VERSION"));
        return 2;
    };
    let args: Vec<String> = matches.get_many::<String>("args").map(|v| v.cloned().collect()).unwrap_or_default();
    match applets::find(name) {
        Some(info) => run_applet(info, &args),
        None => {
            eprintln!("cnibox: no applet named {name:?} (see `cnibox --list`)");
            2
        }
    }
}
