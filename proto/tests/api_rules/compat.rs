//! Wire compatibility of the current API with the released one: what a client or a minion
//! built against the released API sends and expects must still mean the same.

use std::collections::BTreeMap;

use prost_types::field_descriptor_proto::Label;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

// A file loaded through `#[path]` looks up its modules beside itself.
#[path = "compat/tests.rs"]
mod tests;

/// Every change from `released` to `current` that breaks a peer built against `released`, in
/// plain words, one per line.
pub fn breaking_changes(released: &FileDescriptorSet, current: &FileDescriptorSet) -> Vec<String> {
    let released = Api::index(released);
    let current = Api::index(current);
    let mut changes = Vec::new();
    for (name, message) in &released.messages {
        match current.messages.get(name) {
            Some(now) => compare_messages(name, message, now, &mut changes),
            // A map field's entry goes with the field, which is checked on its own.
            None if is_map_entry(message) => {}
            None => changes.push(format!("message {name} is gone")),
        }
    }
    for (name, enumeration) in &released.enums {
        match current.enums.get(name) {
            Some(now) => compare_enums(name, enumeration, now, &mut changes),
            None => changes.push(format!("enum {name} is gone")),
        }
    }
    for (name, service) in &released.services {
        match current.services.get(name) {
            Some(now) => compare_services(name, service, now, &mut changes),
            None => changes.push(format!("service {name} is gone")),
        }
    }
    changes
}

/// A descriptor set's messages, enums and services (nested ones too) by full name, without
/// the leading dot; sorted, so that changes are listed in the same order every time.
struct Api<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
    services: BTreeMap<String, &'a ServiceDescriptorProto>,
}

impl<'a> Api<'a> {
    fn index(set: &'a FileDescriptorSet) -> Self {
        let mut api = Api {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                api.add_message(package, message);
            }
            for enumeration in &file.enum_type {
                api.enums
                    .insert(format!("{package}.{}", enumeration.name()), enumeration);
            }
            for service in &file.service {
                api.services
                    .insert(format!("{package}.{}", service.name()), service);
            }
        }
        api
    }

    fn add_message(&mut self, scope: &str, message: &'a DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for enumeration in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", enumeration.name()), enumeration);
        }
        self.messages.insert(name, message);
    }
}

fn is_map_entry(message: &DescriptorProto) -> bool {
    message
        .options
        .as_ref()
        .is_some_and(|options| options.map_entry())
}

fn compare_messages(
    name: &str,
    released: &DescriptorProto,
    current: &DescriptorProto,
    changes: &mut Vec<String>,
) {
    for field in &released.field {
        let number = field.number();
        let described_field = format!("field {name}.{} ({number})", field.name());
        match current.field.iter().find(|now| now.number() == number) {
            Some(now) => compare_fields(&described_field, field, released, now, current, changes),
            None => require_reservation(
                &described_field,
                number,
                field.name(),
                name,
                current,
                changes,
            ),
        }
    }
    for field in &current.field {
        let described_field = format!("field {name}.{} ({})", field.name(), field.number());
        refuse_reserved(
            &described_field,
            field.number(),
            field.name(),
            released,
            changes,
        );
    }
}

/// `described_field` names the released field: `field <full name> (<number>)`.
fn compare_fields(
    described_field: &str,
    released: &FieldDescriptorProto,
    released_message: &DescriptorProto,
    current: &FieldDescriptorProto,
    current_message: &DescriptorProto,
    changes: &mut Vec<String>,
) {
    let mut changed = |what: &str, was: String, is: String| {
        if was != is {
            changes.push(format!("{described_field}: {what} was {was}, is now {is}"));
        }
    };
    changed(
        "its name",
        format!("`{}`", released.name()),
        format!("`{}`", current.name()),
    );
    changed("its type", field_type(released), field_type(current));
    changed(
        "its cardinality",
        cardinality(released),
        cardinality(current),
    );
    changed(
        "`optional`",
        released.proto3_optional().to_string(),
        current.proto3_optional().to_string(),
    );
    changed(
        "its oneof",
        oneof(released, released_message),
        oneof(current, current_message),
    );
}

/// A scalar type's name as in a proto file (`int64`), or the message or enum's full name.
fn field_type(field: &FieldDescriptorProto) -> String {
    match field.type_name() {
        "" => field
            .r#type()
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_ascii_lowercase(),
        type_name => type_name.trim_start_matches('.').to_owned(),
    }
}

fn cardinality(field: &FieldDescriptorProto) -> String {
    match field.label() {
        Label::Optional => "singular",
        Label::Required => "required",
        Label::Repeated => "repeated",
    }
    .to_owned()
}

/// The name of the oneof `field` is in, `none` for none; the synthetic oneof of a proto3
/// `optional` field is none, as `optional` is compared on its own.
fn oneof(field: &FieldDescriptorProto, message: &DescriptorProto) -> String {
    let declared = field
        .oneof_index
        .filter(|_| !field.proto3_optional())
        .and_then(|index| message.oneof_decl.get(usize::try_from(index).ok()?));
    match declared {
        Some(oneof) => format!("`{}`", oneof.name()),
        None => "none".to_owned(),
    }
}

fn compare_enums(
    name: &str,
    released: &EnumDescriptorProto,
    current: &EnumDescriptorProto,
    changes: &mut Vec<String>,
) {
    for value in &released.value {
        let number = value.number();
        let described_value = format!("enum value {name}.{} ({number})", value.name());
        // Several names for one number are allowed with `allow_alias`: the released one must be
        // among them.
        let now: Vec<&str> = current
            .value
            .iter()
            .filter(|now| now.number() == number)
            .map(|now| now.name())
            .collect();
        if now.is_empty() {
            require_reservation(
                &described_value,
                number,
                value.name(),
                name,
                current,
                changes,
            );
        } else if !now.contains(&value.name()) {
            changes.push(format!(
                "{described_value}: number {number} is now named `{}`",
                now.join("`, `")
            ));
        }
    }
    for value in &current.value {
        let described_value = format!("enum value {name}.{} ({})", value.name(), value.number());
        refuse_reserved(
            &described_value,
            value.number(),
            value.name(),
            released,
            changes,
        );
    }
}

/// What a message or an enum reserved: numbers and names that no field or value may take, so
/// that a peer of an older version never reads a new meaning into them.
trait Reservations {
    fn reserves_number(&self, number: i32) -> bool;
    fn reserves_name(&self, name: &str) -> bool;
}

impl Reservations for DescriptorProto {
    fn reserves_number(&self, number: i32) -> bool {
        self.reserved_range
            .iter()
            .any(|range| range.start() <= number && number < range.end())
    }

    fn reserves_name(&self, name: &str) -> bool {
        self.reserved_name.iter().any(|reserved| reserved == name)
    }
}

impl Reservations for EnumDescriptorProto {
    /// An enum's reserved ranges include their end, unlike a message's.
    fn reserves_number(&self, number: i32) -> bool {
        self.reserved_range
            .iter()
            .any(|range| range.start() <= number && number <= range.end())
    }

    fn reserves_name(&self, name: &str) -> bool {
        self.reserved_name.iter().any(|reserved| reserved == name)
    }
}

/// A released field or enum value is gone from `container` (named `container_name`): its
/// number and its name must both be reserved there. `element` says which, e.g.
/// `field brine.v1.Hello.version (1)`.
fn require_reservation(
    element: &str,
    number: i32,
    name: &str,
    container_name: &str,
    container: &impl Reservations,
    changes: &mut Vec<String>,
) {
    let mut missing = Vec::new();
    if !container.reserves_number(number) {
        missing.push(format!("`reserved {number};`"));
    }
    if !container.reserves_name(name) {
        missing.push(format!("`reserved \"{name}\";`"));
    }
    if !missing.is_empty() {
        changes.push(format!(
            "{element} is gone without {} in {container_name}",
            missing.join(" and ")
        ));
    }
}

/// A current field or enum value must not take a number or a name that its message or enum
/// reserved in the released API. `element` says which, e.g. `field brine.v1.Hello.version (1)`.
fn refuse_reserved(
    element: &str,
    number: i32,
    name: &str,
    released: &impl Reservations,
    changes: &mut Vec<String>,
) {
    if released.reserves_number(number) {
        changes.push(format!(
            "{element} takes number {number}, which the released API reserved"
        ));
    }
    if released.reserves_name(name) {
        changes.push(format!(
            "{element} takes the name `{name}`, which the released API reserved"
        ));
    }
}

fn compare_services(
    name: &str,
    released: &ServiceDescriptorProto,
    current: &ServiceDescriptorProto,
    changes: &mut Vec<String>,
) {
    for method in &released.method {
        let rpc = format!("{name}.{}", method.name());
        let Some(now) = current
            .method
            .iter()
            .find(|now| now.name() == method.name())
        else {
            changes.push(format!("RPC {rpc} is gone"));
            continue;
        };
        let mut changed = |what: &str, was: &str, is: &str| {
            if was != is {
                changes.push(format!("RPC {rpc}: {what} was {was}, is now {is}"));
            }
        };
        let streaming = |yes: bool| if yes { "a stream" } else { "one message" };
        changed(
            "its request type",
            method.input_type().trim_start_matches('.'),
            now.input_type().trim_start_matches('.'),
        );
        changed(
            "its response type",
            method.output_type().trim_start_matches('.'),
            now.output_type().trim_start_matches('.'),
        );
        changed(
            "its request",
            streaming(method.client_streaming()),
            streaming(now.client_streaming()),
        );
        changed(
            "its response",
            streaming(method.server_streaming()),
            streaming(now.server_streaming()),
        );
    }
}
