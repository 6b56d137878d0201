//! A group's Services: the name and namespace of a group, and a Service
//! selecting the group's Pods (the headless peer Service among them).
//! Re-exported by [`super::render`].

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;

use super::Component;
use super::render::{RenderError, group_selector};

/// The name and namespace of a group; an error when it lacks either.
pub fn group_parts<C: Component>(group: &C::Group) -> Result<(String, String), RenderError> {
    let m = group.meta();
    let kind = C::KIND;
    let name = m
        .name
        .clone()
        .ok_or_else(|| RenderError::Incomplete(format!("{kind}Group without a name")))?;
    let ns = m
        .namespace
        .clone()
        .ok_or_else(|| RenderError::Incomplete(format!("{kind}Group without a namespace")))?;
    Ok((name, ns))
}

/// A Service port named `name` targeting the container port of that name.
pub fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// A Service of a group named `service`, selecting the group's Pods, with
/// the named `ports`. `headless`: no cluster IP, and not-ready addresses are
/// published (the Pods' DNS names resolve from their start).
pub fn render_group_service<C: Component>(
    group: &C::Group,
    cluster: &str,
    service: &str,
    ports: &[(&str, i32)],
    headless: bool,
) -> Result<Service, RenderError> {
    let (name, ns) = group_parts::<C>(group)?;
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service.to_owned()),
            namespace: Some(ns),
            labels: Some(group_selector::<C>(cluster, &name)),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(group_selector::<C>(cluster, &name)),
            ports: Some(ports.iter().map(|(n, p)| service_port(n, *p)).collect()),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
