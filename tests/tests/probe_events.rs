//! Unit state changes arrive as events (PropertiesChanged over the host's real D-Bus), not
//! only when a probe asks.

use std::time::Duration;

use futures_util::StreamExt;
use gatemend_agent::probe::systemd::Systemd;
use gatemend_tests::testbed::{Fleet, HostSpec};

#[test]
fn stopping_php_fpm_is_an_event_for_its_unit_and_not_for_nginx() {
    let fleet = Fleet::boot_for_test(1, &HostSpec::default());
    let host = &fleet.hosts()[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let systemd = Systemd::at_address(&host.bus_address()).await.unwrap();
        let units = ["php8.2-fpm.service".to_owned(), "nginx.service".to_owned()];
        let mut changes = systemd.unit_changes(&units).await.unwrap();
        host.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("an event within 30 s")
            .expect("the stream goes on");
        assert_eq!(first, "php8.2-fpm.service");
        // Everything that arrives now is about php-fpm: nginx did not change.
        while let Ok(Some(unit)) =
            tokio::time::timeout(Duration::from_millis(500), changes.next()).await
        {
            assert_eq!(unit, "php8.2-fpm.service");
        }
        let state = systemd.unit_state("php8.2-fpm.service").await.unwrap();
        assert_eq!(state.active_state, "inactive");
    });
}
