package main

// hyper2kvmOnlyKeys are the top-level keys of a hyper2kvm configuration
// file that linkgate does not use. A file given to --hyper2kvm.config may
// hold any of them, and linkgate skips them; a key whose value is a section
// (retry_policy:, windows:, vms:, ...) is skipped whole. A top-level key that
// is neither listed here nor linkgate's own is an error. The keys linkgate
// maps from a hyper2kvm file are deliberately absent: network_monitor, the
// vc_connection_* keys, vcenter and the vc_*/vs_* connection keys (host,
// port, user, password, password_env, insecure), notifications, output_dir
// and cmd.
//
// The names come from the public hyper2kvm repository
// (github.com/ssahani/hyper2kvm; its newest tree, github.com/zyvorai/h2kvm,
// renames the package directory hyper2kvm/ to h2kvm/): the dests of the
// CLI's argparse options, the keys its config loader, daemon and vSphere
// client read, and the top-level keys of its example configurations under
// examples/yaml/, test-confs/ and config/. Only the names are taken. hyper2kvm
// also accepts dashes for underscores in keys and GOVC_* spellings of the
// govc_* keys; only the underscore spelling is listed.
var hyper2kvmOnlyKeys = map[string]bool{
	// The CLI's argparse dests (a YAML key is the option's dest);
	// hyper2kvm/cli/args/groups.py, h2kvm/cli/args/groups.py in the newest, renamed tree.

	// _add_global_config_logging
	"manifest": true, "dump_config": true, "dump_args": true, "verbose": true, "log_file": true,
	"debug": true, "log_format": true,

	// _add_project_control (cmd is linkgate's: it ignores it)
	"vs_action": true,

	// _add_global_operation_flags (output_dir is linkgate's)
	"dry_run": true, "no_backup": true, "print_fstab": true, "workdir": true,
	"conversion_dir": true, "cleanup_cache": true, "allowed_dirs": true,

	// _add_flatten_convert
	"flatten": true, "flatten_format": true, "to_output": true, "out_format": true,
	"compress": true, "compress_level": true, "checksum": true,

	// _add_fixing_behavior
	"backend": true, "container_isolation": true, "fstab_mode": true, "no_grub": true,
	"regen_initramfs": true, "initramfs_add_drivers": true, "serial_console": true,
	"root_password": true, "ssh_authorized_key": true, "remove_vmware_tools": true,
	"enable_rdp": true, "cloud_init_config": true, "firstboot_scripts": true,
	"network_config_inject": true, "user_config_inject": true, "service_config_inject": true,
	"hostname_config_inject": true, "enable_recovery": true, "parallel_processing": true,
	"workers": true, "resize": true, "report": true, "virtio_drivers_dir": true,

	// _add_windows_virtio_definitions
	"virtio_config_path": true, "virtio_config_json": true, "virtio_deploy_boot": true,
	"virtio_deploy_timeout": true, "virtio_deploy_start_final": true,

	// _add_windows_network_override
	"win_net_override": true, "win_net_json": true,

	// _add_luks_knobs
	"luks_passphrase": true, "luks_passphrase_env": true, "luks_keyfile": true,
	"luks_mapper_prefix": true, "luks_enable": true, "luks_clevis": true,
	"luks_clevis_tang_url": true,

	// _add_tests
	"libvirt_test": true, "qemu_test": true, "vm_name": true, "memory": true, "vcpus": true,
	"uefi": true, "firmware_mode": true, "firmware_fallback": true, "hyperv_generation": true,
	"win_secure_boot": true, "timeout": true, "keep_domain": true, "headless": true,
	"health_check": true, "health_check_timeout": true, "libvirt_network_config": true,

	// _add_domain_emission
	"emit_domain_xml": true, "virsh_define": true, "mac_address": true, "force_replace": true,
	"guest_os": true, "windows": true, "machine": true, "graphics": true, "graphics_listen": true,
	"video": true, "disk_cache": true, "net_model": true, "libvirt_network": true,
	"usb_tablet": true, "ovmf_code": true, "nvram_vars": true, "ovmf_vars_template": true,
	"hugepages": true, "iothreads": true, "disable_memballoon": true, "cpu_topology": true,
	"tsc_timer": true, "disk_io": true, "disk_discard": true, "high_perf": true, "disk_bus": true,
	"disk_dev": true, "clock": true, "cloudinit_iso": true, "cloudinit_seed_iso": true,
	"win_stage": true, "win_driver_iso": true, "virtio_win_iso": true, "driver_iso": true,
	"custom_pnp_drivers": true, "win_localtime_clock": true, "win_hyperv": true,

	// _add_daemon_flags
	"daemon": true, "watch_dir": true, "workflow_mode": true, "workflow_dir": true,
	"max_concurrent_jobs": true, "manifest_workflow_mode": true, "manifest_workflow_dir": true,
	"kubeconfig": true,

	// _add_ovf_ova_knobs
	"log_virt_filesystems": true, "ova_convert_to_qcow2": true, "ova_qcow2_dir": true,
	"ova_convert_compress": true, "ova_convert_compress_level": true,

	// _add_ami_extraction_knobs
	"extract_nested_tar": true, "convert_payload_to_qcow2": true, "payload_qcow2_dir": true,

	// _add_libvirt_xml_knobs
	"libvirt_xml": true, "compute_checksums": true, "manifest_filename": true,

	// _add_input_paths
	"vmdk": true, "ova": true, "ovf": true, "vhd": true, "ami": true, "raw": true,

	// _add_ssh_fetch_knobs (the SSH host of fetch-and-fix/live-fix, not vCenter)
	"host": true, "user": true, "port": true, "identity": true, "ssh_opt": true, "remote": true,
	"fetch_dir": true, "fetch_all": true, "sudo": true, "ssh_password": true,

	// _add_systemd_gen
	"systemd_output": true,

	// _add_vsphere_core_knobs (vcenter, vc_* are linkgate's)
	"dc_name": true, "export_mode": true, "vs_control_plane": true, "vs_download_transport": true,

	// _add_govc_knobs
	"govc_url": true, "govc_user": true, "govc_password": true, "govc_password_env": true,
	"govc_insecure": true, "govc_datacenter": true, "govc_cluster": true, "govc_folder": true,
	"govc_ds": true, "govc_resource_pool": true, "govc_stdout_json": true,
	"govc_export_power_off": true, "govc_export_shutdown": true,
	"govc_export_shutdown_timeout_s": true, "govc_export_shutdown_poll_s": true,
	"govc_export_remove_cdroms": true, "govc_export_show_vm_info": true, "govc_max_detail": true,

	// _add_ovftool_knobs
	"ovftool_path": true, "ovftool_no_ssl_verify": true, "ovftool_thumbprint": true,
	"ovftool_accept_all_eulas": true, "ovftool_quiet": true, "ovftool_verbose": true,
	"ovftool_overwrite": true, "ovftool_disk_mode": true, "ovftool_retries": true,
	"ovftool_retry_backoff_s": true, "ovftool_extra_args": true, "ovftool_target_folder": true,
	"ovftool_target_resource_pool": true, "ovftool_network_map": true, "ovftool_power_on": true,
	"ovftool_vm_name": true, "ovftool_datastore": true,

	// _add_vsphere_export_and_download_knobs
	"vs_export": true, "vs_vm": true, "vs_vms": true, "vs_datacenter": true,
	"vs_snapshot_moref": true, "vs_create_snapshot": true, "vs_download_only": true,
	"vs_export_concurrency": true, "vs_no_verify": true, "vs_include_glob": true,
	"vs_exclude_glob": true, "vs_concurrency": true, "vs_max_files": true,
	"vs_use_async_http": true, "vs_fail_on_missing": true, "json": true, "vm_name_vsphere": true,
	"name_vsphere": true, "label_or_index": true, "datastore": true, "ds_path": true,
	"local_path": true, "chunk_size": true, "snapshot_name": true, "quiesce": true,
	"snapshot_memory": true, "snapshot_description": true, "enable_cbt": true, "device_key": true,
	"disk": true, "start_offset": true, "change_id": true, "vs_output_dir": true,
	"source_path": true,

	// _add_batch_knobs
	"batch_manifest": true, "batch_parallel": true, "batch_continue_on_error": true,

	// _add_azure_knobs
	"azure_subscription": true, "azure_tenant": true, "azure_resource_group": true,
	"azure_vm_names": true, "azure_tags": true, "azure_power_state": true, "azure_list_only": true,
	"azure_allow_all_rgs": true, "azure_shutdown_mode": true, "azure_shutdown_force": true,
	"azure_shutdown_wait": true, "azure_use_snapshots": true, "azure_stage_disk": true,
	"azure_disks": true, "azure_consistency": true, "azure_tag_resources": true,
	"azure_keep_snapshots": true, "azure_keep_temp_disks": true, "azure_run_tag": true,
	"azure_sas_duration": true, "azure_parallel": true, "azure_chunk_mb": true,
	"azure_resume": true, "azure_verify_size": true, "azure_strict_verify": true,
	"azure_temp_suffix": true, "azure_connect_timeout": true, "azure_read_timeout": true,
	"azure_retries": true, "azure_backoff_base": true, "azure_backoff_cap": true,

	// _add_kubernetes_deployment
	"deploy_k8s": true, "k8s_namespace": true, "k8s_vm_name": true, "k8s_pvc_name": true,
	"k8s_storage_class": true, "k8s_pvc_size": true, "k8s_cpu": true, "k8s_memory": true,
	"k8s_disk_bus": true, "k8s_stop_before_deploy": true, "k8s_stop_wait_timeout": true,
	"k8s_auto_start": true, "k8s_wait_ready": true, "k8s_novnc": true, "k8s_novnc_port": true,

	// _add_openstack_deployment
	"deploy_openstack": true, "glance_name": true, "openstack_description": true,
	"openstack_visibility": true, "os_cloud": true, "os_auth_url": true, "os_username": true,
	"os_password": true, "os_project_name": true, "os_user_domain_name": true,
	"os_project_domain_name": true, "openstack_boot_instance": true, "openstack_server_name": true,
	"openstack_flavor": true, "openstack_network": true, "openstack_key_name": true,
	"openstack_security_group": true, "openstack_availability_zone": true, "openstack_wait": true,
	"openstack_continue_on_error": true,

	// _add_kairon_deployment
	"deploy_kairon": true, "kairon_veyron_url": true, "kairon_api_key": true,
	"kairon_insecure": true, "kairon_namespace": true, "kairon_vm_name": true, "kairon_cpus": true,
	"kairon_memory": true, "kairon_image_url": true, "kairon_serve": true,
	"kairon_advertise_url": true, "kairon_repair": true, "kairon_secure_boot": true,
	"kairon_tpm": true, "kairon_no_start": true, "kairon_source_hypervisor": true,
	"kairon_wait_timeout": true, "kairon_continue_on_error": true,

	// _add_ai_flags
	"no_ai": true, "ai_info": true,

	// Older versions of _add_vsphere_export_and_download_knobs (VDDK transport, raw VDDK
	// download)
	"vs_transport": true, "vs_vddk_libdir": true, "vs_vddk_thumbprint": true,
	"vs_vddk_libdir2": true, "vs_vddk_thumbprint2": true, "vs_no_verify2": true,
	"vs_vddk_transports2": true,

	// vmdk2kvm-era hyper2kvm/cli/argument_parser.py (virt-v2v knobs, AMI payload compression)
	"use_v2v": true, "post_v2v": true, "v2v_parallel": true, "v2v_concurrency": true,
	"vs_v2v": true, "vs_v2v_concurrency": true, "vs_v2v_extra_args": true,
	"payload_convert_compress": true, "payload_convert_compress_level": true,

	// Keys the code reads beside argparse.

	// hyper2kvm/config/config_loader.py: Config._canonicalize_aliases (command <-> cmd, action
	// <-> vs_action, control_plane <-> vs_control_plane) and load_vm_configs (the vms: fan-out
	// list, one mapping per VM)
	"command": true, "action": true, "control_plane": true, "vms": true,

	// hyper2kvm/daemon/daemon_watcher.py: DaemonWatcher (retry_policy: is a section: enabled,
	// max_retries, retry_delay, backoff_multiplier)
	"file_stable_timeout": true, "enable_deduplication": true, "deduplication_use_md5": true,
	"retry_policy": true, "archive_processed": true,

	// hyper2kvm/vmware/clients/client.py: VMwareClient.from_config
	"govc_bin": true, "no_govmomi": true,

	// h2kvm/cli/args/validators.py: _validate_cmd_raw (aliases of raw:)
	"img": true, "raw_src": true, "raw_path": true,

	// h2kvm/cli/system_config.py: merge_with_system_config (sections libvirt: and conversion:)
	"libvirt": true, "conversion": true,

	// Keys only the example configurations use (examples/yaml/, test-confs/, config/);
	// hyper2kvm may not read them all, but a file copied from them must load.

	// examples/yaml/50-daemon/daemon-enhanced.yaml, config/daemon.yaml, config/batch.yaml
	"update_grub": true, "win_virtio": true, "vm_memory": true, "vm_vcpus": true, "vm_uefi": true,
	"auto_remove_source": true,

	// examples/yaml/10-local/local-windows-enterprise.yaml, local-windows-virtio-extra-
	// devices.yaml
	"enable_virtio_gpu": true, "enable_virtio_input": true, "enable_virtio_fs": true,
	"enable_virtio_serial": true, "enable_virtio_rng": true,

	// examples/yaml/60-vsphere/vsphere-create-snapshot-quiesced.yaml, vsphere-get-vm.yaml
	// (option names of --name, --description)
	"name": true, "description": true,

	// examples/yaml/photon-ova.yaml (sections output:, fix:, test:)
	"output": true, "fix": true, "test": true,

	// examples/yaml/stabilizeall-esx8-rhel10.yaml
	"stabilizeall": true,

	// examples/yaml/70-complete-workflows/vsphere-to-libvirt-*.yaml: vSphere connection and
	// export
	"username": true, "password_file": true, "datacenter": true, "cluster": true,
	"export_method": true, "export_format": true, "create_snapshot": true,
	"snapshot_quiesce": true, "delete_snapshot_after": true, "disk_format": true,
	"output_format": true,

	// examples/yaml/70-complete-workflows/vsphere-to-libvirt-*.yaml: guest fixes
	"fix_fstab": true, "fix_grub": true, "fix_initramfs": true, "fix_network": true,
	"network_config_type": true, "network_config_path": true, "network_config_format": true,
	"network_renderer": true, "network_fix_level": true, "remove_mac_binding": true,
	"setup_dhcp": true, "preserve_static_ip": true, "preserve_network_config": true,
	"remove_vmware_network_files": true, "bootloader_type": true, "firmware_type": true,
	"regenerate_grub": true, "update_grub_config": true, "grub_timeout": true,
	"grubby_update": true, "grub_cmdline_add": true, "update_initramfs": true,
	"dracut_force_rebuild": true, "dracut_add_drivers": true, "dracut_add_modules": true,
	"install_virtio_modules": true, "initramfs_tools_config": true, "initramfs_modules": true,
	"selinux_relabel": true, "selinux_mode": true, "preserve_rhsm_config": true,
	"rhsm_server": true, "clean_ssh_keys": true, "clean_machine_id": true,
	"clean_cloud_init": true, "preserve_hostname": true, "timezone": true,
	"cloud_init_support": true, "cloud_init_datasource": true,

	// examples/yaml/70-complete-workflows/vsphere-to-libvirt-windows-1[01].yaml: Windows
	"os_type": true, "os_variant": true, "windows_version": true, "inject_virtio": true,
	"virtio_drivers": true, "modify_registry": true, "registry_edits": true, "boot_strategy": true,
	"phase1_bus": true, "phase2_bus": true, "backup_bcd": true, "repair_bcd": true,
	"uninstall_vmware_tools_cleanly": true,

	// examples/yaml/70-complete-workflows/vsphere-to-libvirt-*.yaml: libvirt domain
	"generate_libvirt_xml": true, "libvirt_xml_path": true, "libvirt_domain_name": true,
	"memory_mb": true, "memory_backing": true, "cpu_mode": true, "cpu_features": true,
	"numa_nodes": true, "machine_type": true, "uefi_loader": true, "uefi_nvram_template": true,
	"secure_boot": true, "secure_boot_enrolled_keys": true, "enable_tpm": true,
	"tpm_version": true, "tpm_model": true, "tpm_backend": true, "tpm_persistent_state": true,
	"disk_bus_phase1": true, "disk_cache_phase1": true, "disk_detect_zeroes": true,
	"additional_disks": true, "network_type": true, "network_bridge": true, "network_model": true,
	"network_mtu": true, "enable_iothreads": true, "iothread_count": true,
	"enable_serial_console": true, "enable_vnc": true, "vnc_listen": true, "vnc_password": true,
	"vnc_password_required": true, "enable_spice": true, "spice_listen": true,
	"graphics_type": true, "enable_qxl": true, "video_ram_mb": true, "enable_audio": true,
	"audio_model": true, "enable_usb_tablet": true, "enable_usb_keyboard": true,
	"enable_usb_redirection": true, "usb_controller": true, "qemu_guest_agent": true,
	"qemu_guest_agent_path": true, "enable_balloon": true, "enable_rng": true, "rng_model": true,
	"enable_hyperv_enlightenments": true, "hyperv_features": true, "clock_offset": true,
	"clock_timers": true,

	// examples/yaml/70-complete-workflows/vsphere-to-libvirt-*.yaml: validation, reporting,
	// recovery
	"boot_timeout": true, "validate_network": true, "validate_services": true,
	"validate_windows_boot": true, "check_virtio_drivers_loaded": true, "validate_tpm": true,
	"validate_secure_boot": true, "log_level": true, "recovery_checkpoint_dir": true,
	"post_migration_script": true, "post_migration_commands": true, "pre_migration_checks": true,
	"post_migration_notes": true,

	// test-confs/50-photon-os-libvirt.yaml, 70-ubuntu-libvirt.yaml
	"use_export": true, "export_parallel": true, "export_concurrency": true, "post_export": true,

	// test-confs/52-photon-os-ami.yaml, photon-ova.yaml, 51-photon-os-ova.yaml
	"safe_extract": true, "skip_special": true, "max_members": true, "max_total_bytes": true,
	"prefer_largest_disk": true,

	// test-confs/80-windows-drivers-network.yaml (sections windows_virtio:, win_net:)
	"windows_virtio": true, "win_net": true,

	// test-confs/v2v-rhel10-ova-export.yaml, v2v-rhel10-ovf-export.yaml
	"govc_export_snapshot": true, "govc_export_disk_mode": true,

	// test-confs/40-vsphere-vddk-download-disk.yaml, 41-vsphere-pyvmomi-vddk.yaml
	"vs_vddk_transports": true, "vs_vddk_thumbprint_env": true,

	// test-confs/rhel88-migration.yaml, centos9-migration.yaml (verbosity: beside verbose:)
	"verbosity": true,

	// test-confs/centos10-test.yaml, centos9-download-test.yaml, test-centos9-k3s.yaml and the
	// other *-test.yaml
	"fstab_fixes_enable": true, "fstab_prefer_partuuid": true, "fstab_optimize_options": true,
	"grub_fixes_enable": true, "initramfs_regen_enable": true, "initramfs_regen_force": true,
	"network_fixes_enable": true, "cloud_init_enable": true, "use_netplan": true,
	"skip_offline_fixes": true, "libvirt_xml_generate": true, "libvirt_vm_name": true,
	"libvirt_memory_mb": true, "libvirt_vcpus": true, "libvirt_disk_bus": true,
	"libvirt_import": true,

	// test-confs/fedora42-full-test.yaml
	"filesystem_repair_enable": true, "network_level": true, "cloud_init_user": true,
	"cloud_init_network": true, "cloud_init_hostname": true, "cloud_init_packages": true,
	"cloud_init_runcmd": true, "kernel_cmdline_add": true, "kernel_cmdline_remove": true,
	"vmware_cleanup_enable": true, "vmware_cleanup_packages": true, "enable_discard": true,
	"ioscheduler": true, "ssh_hostkeys_regenerate": true, "machine_id_clear": true,
	"libvirt_network_model": true, "libvirt_graphics": true, "report_json": true,
	"validate_image": true, "collect_metrics": true, "create_backup": true,

	// test-confs/test-config.yaml, test-rhel88.yaml
	"copy_to_libvirt_images": true,

	// test-confs/win10-migration.yaml (section windows_config:)
	"windows_config": true,

	// test-confs/enterprise-parallel-test.yaml (sections parallel:, offline_fixes:, quality:,
	// migration:)
	"source_image": true, "output_image": true, "parallel": true, "offline_fixes": true,
	"quality": true, "migration": true,

	// test-confs/migration-config.yaml (sections input:, validation:, reporting:, advanced:),
	// rhel88-daemon-job.yaml (input:)
	"input": true, "validation": true, "reporting": true, "advanced": true,

	// test-confs/97-linux-firstboot-scripts-examples.yaml, 98-linux-network-config-injection-
	// examples.yaml (text templates kept at the top level)
	"network_rhel_template": true, "network_ubuntu_template": true,
	"network_debian_template": true, "network_suse_template": true, "static_ip_template": true,
	"dhcp_template": true, "nm_static_template": true,
}
