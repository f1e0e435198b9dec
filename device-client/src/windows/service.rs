//! `berqenas-device run` as a Windows service (`BerqenasDevice`, LocalSystem, automatic start)
//! through the `windows-service` crate: `service install` registers it with recovery actions
//! (restart after 5 s, three times, counter reset after a day; also when it stops with an
//! error), `service uninstall` removes it; the service control manager starts
//! `berqenas-device run --service --state-dir DIR`, which reports Running and stops on Stop or
//! Shutdown.

#![allow(
    unsafe_code,
    reason = "define_windows_service! expands to the service entry point, which parses raw arguments"
)]

use crate::state::StateDir;
use anyhow::Context;
use std::ffi::OsString;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept, ServiceErrorControl,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState,
    ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

pub const NAME: &str = "BerqenasDevice";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Action {
    Install,
    Uninstall,
}

static STATE_DIR: OnceLock<StateDir> = OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the service control manager; returns when the service has stopped.
pub fn run_as_service(dir: StateDir) -> anyhow::Result<()> {
    let _ = STATE_DIR.set(dir);
    windows_service::service_dispatcher::start(NAME, ffi_service_main)
        .context("not started by the service control manager (use `service install`, or `run` without --service)")
}

fn service_main(_: Vec<OsString>) {
    if let Err(e) = serve() {
        eprintln!("berqenas-device: service: {e:#}");
    }
}

fn status(state: ServiceState, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: Duration::from_secs(10),
        process_id: None,
    }
}

fn serve() -> anyhow::Result<()> {
    let dir = STATE_DIR.get().cloned().context("no state directory")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Mutex::new(Some(tx));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop.lock().ok().and_then(|mut s| s.take()) {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(NAME, handler)?;
    handle.set_service_status(status(ServiceState::Running, 0))?;
    let result = crate::runtime().and_then(|rt| {
        rt.block_on(crate::run::run(dir, async {
            let _ = rx.await;
        }))
    });
    // A non-zero exit code makes the recovery actions apply (failure actions on non-crash
    // failures are enabled at install).
    let code = if result.is_ok() { 0 } else { 1 };
    handle.set_service_status(status(ServiceState::Stopped, code))?;
    result
}

pub fn manage(dir: &StateDir, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Install => install(dir),
        Action::Uninstall => uninstall(),
    }
}

fn install(dir: &StateDir) -> anyhow::Result<()> {
    dir.load()?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("open the service control manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: NAME.into(),
        display_name: "Berqenas device".into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: std::env::current_exe().context("find this program")?,
        launch_arguments: vec!["run".into(), "--service".into(), "--state-dir".into(), dir.root().as_os_str().into()],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .context("create the service")?;
    let restart = ServiceAction { action_type: ServiceActionType::Restart, delay: Duration::from_secs(5) };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })
        .context("set the recovery actions")?;
    service.set_failure_actions_on_non_crash_failures(true).context("set the recovery actions")?;
    service.start(&[] as &[&str]).context("start the service")?;
    println!("service {NAME} installed and started");
    Ok(())
}

fn uninstall() -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("open the service control manager (run as Administrator)")?;
    let service = manager
        .open_service(NAME, ServiceAccess::STOP | ServiceAccess::DELETE | ServiceAccess::QUERY_STATUS)
        .context("open the service")?;
    let _ = service.stop();
    service.delete().context("delete the service")?;
    println!("service {NAME} removed");
    Ok(())
}
