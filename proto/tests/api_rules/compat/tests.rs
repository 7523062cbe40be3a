//! Each kind of change, made in memory to the current API's descriptors, against the unchanged
//! ones. The changes pick their targets by shape (the first message with a field, ...), not by
//! name, so that they keep working as the API changes.

use prost_types::descriptor_proto::ReservedRange;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet, MethodDescriptorProto};

use super::breaking_changes;
use crate::compile_the_api;

/// The API's first top-level message with a field, and that field's full name.
fn message_with_a_field(api: &mut FileDescriptorSet) -> (&mut DescriptorProto, String) {
    let file = api
        .file
        .iter_mut()
        .find(|file| {
            file.message_type
                .iter()
                .any(|message| !message.field.is_empty())
        })
        .expect("the API has a message with a field");
    let package = file.package().to_owned();
    let message = file
        .message_type
        .iter_mut()
        .find(|message| !message.field.is_empty())
        .expect("the file has a message with a field");
    let field_name = format!("{package}.{}.{}", message.name(), message.field[0].name());
    (message, field_name)
}

/// The API's first top-level enum with a value besides zero.
fn enum_with_values(api: &mut FileDescriptorSet) -> &mut EnumDescriptorProto {
    api.file
        .iter_mut()
        .flat_map(|file| file.enum_type.iter_mut())
        .find(|enumeration| enumeration.value.len() > 1)
        .expect("the API has an enum with a value besides zero")
}

/// The API's first RPC.
fn an_rpc(api: &mut FileDescriptorSet) -> &mut MethodDescriptorProto {
    api.file
        .iter_mut()
        .flat_map(|file| file.service.iter_mut())
        .flat_map(|service| service.method.iter_mut())
        .next()
        .expect("the API has an RPC")
}

/// Removes the first field of `message_with_a_field`, reserving its number and name.
fn remove_a_field_reserving_it(api: &mut FileDescriptorSet) {
    let (message, _) = message_with_a_field(api);
    let field = message.field.remove(0);
    message.reserved_range.push(ReservedRange {
        start: field.number,
        end: Some(field.number() + 1),
    });
    message.reserved_name.push(field.name().to_owned());
}

/// Applies `change` to a copy of the current API and returns what breaks.
fn changes_after(change: impl FnOnce(&mut FileDescriptorSet)) -> Vec<String> {
    let released = compile_the_api(false);
    let mut current = released.clone();
    change(&mut current);
    breaking_changes(&released, &current)
}

/// Asserts that one of `changes` contains every one of `words`.
fn assert_reported(changes: &[String], words: &[&str]) {
    assert!(
        changes
            .iter()
            .any(|change| words.iter().all(|word| change.contains(word))),
        "no change saying {words:?} among {changes:#?}"
    );
}

#[test]
fn the_unchanged_api_is_compatible() {
    assert_eq!(changes_after(|_| {}), Vec::<String>::new());
}

#[test]
fn a_field_given_another_number_is_reported() {
    let mut field_name = String::new();
    let changes = changes_after(|api| {
        let (message, name) = message_with_a_field(api);
        let unused = message
            .field
            .iter()
            .map(|field| field.number())
            .max()
            .unwrap_or(0)
            + 1;
        message.field[0].number = Some(unused);
        field_name = name;
    });
    assert_reported(&changes, &[&field_name, "is gone without `reserved"]);
}

#[test]
fn a_field_given_another_type_is_reported() {
    let mut field_name = String::new();
    let changes = changes_after(|api| {
        let (message, name) = message_with_a_field(api);
        let field = &mut message.field[0];
        let other = if field.r#type() == Type::Bytes {
            Type::Bool
        } else {
            Type::Bytes
        };
        field.set_type(other);
        field.type_name = None;
        field_name = name;
    });
    assert_reported(&changes, &[&field_name, "its type was", "is now"]);
}

#[test]
fn a_renamed_field_is_reported() {
    let mut field_name = String::new();
    let changes = changes_after(|api| {
        let (message, name) = message_with_a_field(api);
        let field = &mut message.field[0];
        field.name = Some(format!("{}_renamed", field.name()));
        field_name = name;
    });
    assert_reported(&changes, &[&field_name, "its name was", "_renamed`"]);
}

#[test]
fn a_field_removed_without_reserving_it_is_reported() {
    let mut field_name = String::new();
    let changes = changes_after(|api| {
        let (message, name) = message_with_a_field(api);
        message.field.remove(0);
        field_name = name;
    });
    assert_reported(&changes, &[&field_name, "`reserved ", "`reserved \""]);
}

#[test]
fn a_field_removed_with_its_number_and_name_reserved_is_compatible() {
    assert_eq!(
        changes_after(remove_a_field_reserving_it),
        Vec::<String>::new()
    );
}

#[test]
fn a_field_that_takes_a_reserved_number_and_name_is_reported() {
    // Released without the field, reserved; the current API has it back.
    let mut released = compile_the_api(false);
    let current = released.clone();
    remove_a_field_reserving_it(&mut released);
    let changes = breaking_changes(&released, &current);
    assert_reported(
        &changes,
        &["takes number", "which the released API reserved"],
    );
    assert_reported(
        &changes,
        &["takes the name", "which the released API reserved"],
    );
}

#[test]
fn a_renamed_enum_value_is_reported() {
    let mut value_name = String::new();
    let changes = changes_after(|api| {
        let value = &mut enum_with_values(api).value[1];
        value_name = value.name().to_owned();
        value.name = Some(format!("{value_name}_RENAMED"));
    });
    assert_reported(&changes, &[&value_name, "is now named", "_RENAMED`"]);
}

#[test]
fn a_removed_rpc_is_reported() {
    let mut rpc_name = String::new();
    let changes = changes_after(|api| {
        let service = api
            .file
            .iter_mut()
            .flat_map(|file| file.service.iter_mut())
            .find(|service| !service.method.is_empty())
            .expect("the API has an RPC");
        rpc_name = format!(".{} is gone", service.method.remove(0).name());
    });
    assert_reported(&changes, &["RPC ", &rpc_name]);
}

#[test]
fn an_rpc_made_streaming_is_reported() {
    let mut rpc_name = String::new();
    let changes = changes_after(|api| {
        let rpc = an_rpc(api);
        rpc.server_streaming = Some(!rpc.server_streaming());
        rpc_name = rpc.name().to_owned();
    });
    assert_reported(&changes, &[&rpc_name, "its response was"]);

    let changes = changes_after(|api| {
        let rpc = an_rpc(api);
        rpc.client_streaming = Some(!rpc.client_streaming());
    });
    assert_reported(&changes, &[&rpc_name, "its request was"]);
}

#[test]
fn a_removed_message_is_reported() {
    let mut message_name = String::new();
    let changes = changes_after(|api| {
        let (message, field_name) = message_with_a_field(api);
        message_name = field_name
            .rsplit_once('.')
            .expect("a field's full name has its message's")
            .0
            .to_owned();
        message.name = Some(format!("{}Renamed", message.name()));
    });
    assert_reported(&changes, &[&format!("message {message_name} is gone")]);
}
