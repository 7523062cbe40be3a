//! Naming and documentation rules for the API, after `buf lint`'s defaults, checked over
//! descriptors compiled with source info (for comments and line numbers).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use prost_types::field_descriptor_proto::Type;
use prost_types::source_code_info::Location;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

// A file loaded through `#[path]` looks up its modules beside itself.
#[path = "lint/tests.rs"]
mod tests;

/// The API's one package.
const PACKAGE: &str = "brine.v1";

/// Name endings of fields that hold a time or a duration, which must not be plain integers.
/// `_unix_ms` comes before `_ms` so that a violation names the longer ending.
const TIME_ENDINGS: [&str; 5] = ["_unix_ms", "_ms", "_seconds", "_secs", "_at"];

const INTEGER_TYPES: [Type; 10] = [
    Type::Int32,
    Type::Int64,
    Type::Uint32,
    Type::Uint64,
    Type::Sint32,
    Type::Sint64,
    Type::Fixed32,
    Type::Fixed64,
    Type::Sfixed32,
    Type::Sfixed64,
];

/// Field numbers of descriptor fields, the steps of a `source_code_info` location's path
/// (descriptor.proto).
mod path {
    pub const FILE_PACKAGE: i32 = 2;
    pub const FILE_MESSAGE: i32 = 4;
    pub const FILE_ENUM: i32 = 5;
    pub const FILE_SERVICE: i32 = 6;
    pub const MESSAGE_FIELD: i32 = 2;
    pub const MESSAGE_NESTED_MESSAGE: i32 = 3;
    pub const MESSAGE_NESTED_ENUM: i32 = 4;
    pub const MESSAGE_ONEOF: i32 = 8;
    pub const ENUM_VALUE: i32 = 2;
    pub const SERVICE_METHOD: i32 = 2;
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file's name relative to the include root, e.g. `brine/v1/brine.proto`.
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// The full name of what breaks the rule, e.g. `brine.v1.Hello.now_unix_ms`; an enum value
    /// is named within its enum.
    pub element: String,
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.element, self.problem
        )
    }
}

/// Every violation of the naming and documentation rules in `set`, file by file, each file's
/// in the order of their lines.
pub fn lint(set: &FileDescriptorSet) -> Vec<Violation> {
    let rpc_messages = rpc_messages(set);
    let mut violations = Vec::new();
    for file in &set.file {
        let mut in_file = Vec::new();
        FileLinter::new(file, &rpc_messages, &mut in_file).lint();
        // Stable: an element's violations stay in the order of the rules.
        in_file.sort_by_key(|violation| violation.line);
        violations.append(&mut in_file);
    }
    violations
}

/// The RPCs' request and response types (fully qualified, with a leading dot, as in
/// descriptors), each with what uses it, e.g. `the request of brine.v1.FleetService.Deploy`.
fn rpc_messages(set: &FileDescriptorSet) -> HashMap<&str, Vec<String>> {
    let mut uses: HashMap<&str, Vec<String>> = HashMap::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let rpc = format!("{}.{}.{}", file.package(), service.name(), method.name());
                for (role, type_name) in [
                    ("request", method.input_type()),
                    ("response", method.output_type()),
                ] {
                    uses.entry(type_name)
                        .or_default()
                        .push(format!("the {role} of {rpc}"));
                }
            }
        }
    }
    uses
}

struct FileLinter<'a> {
    file: &'a FileDescriptorProto,
    locations: HashMap<&'a [i32], &'a Location>,
    rpc_messages: &'a HashMap<&'a str, Vec<String>>,
    violations: &'a mut Vec<Violation>,
}

impl<'a> FileLinter<'a> {
    fn new(
        file: &'a FileDescriptorProto,
        rpc_messages: &'a HashMap<&'a str, Vec<String>>,
        violations: &'a mut Vec<Violation>,
    ) -> Self {
        let mut locations = HashMap::new();
        for location in file.source_code_info.iter().flat_map(|info| &info.location) {
            locations
                .entry(location.path.as_slice())
                .or_insert(location);
        }
        FileLinter {
            file,
            locations,
            rpc_messages,
            violations,
        }
    }

    fn lint(&mut self) {
        self.lint_file();
        let package = self.file.package();
        for (index, service) in self.file.service.iter().enumerate() {
            self.lint_service(service, &[path::FILE_SERVICE, to_i32(index)], package);
        }
        for (index, message) in self.file.message_type.iter().enumerate() {
            self.lint_message(message, &[path::FILE_MESSAGE, to_i32(index)], package);
        }
        for (index, enumeration) in self.file.enum_type.iter().enumerate() {
            self.lint_enum(enumeration, &[path::FILE_ENUM, to_i32(index)], package);
        }
    }

    /// The package, the file's directory and the options that name the generated code's
    /// packages in other languages. All are reported at the package statement.
    fn lint_file(&mut self) {
        let at = [path::FILE_PACKAGE];
        let package = self.file.package();
        let element = if package.is_empty() {
            "(no package)"
        } else {
            package
        };
        if package != PACKAGE {
            self.report(&at, element, format!("the package must be `{PACKAGE}`"));
        }
        let directory = Path::new(self.file.name()).parent();
        let expected_directory = PACKAGE.replace('.', "/");
        if directory != Some(Path::new(&expected_directory)) {
            self.report(
                &at,
                element,
                format!("the file must be in the package's directory `{expected_directory}/`"),
            );
        }
        let options = self.file.options.clone().unwrap_or_default();
        for (option, value) in [
            ("go_package", options.go_package()),
            ("java_package", options.java_package()),
            ("csharp_namespace", options.csharp_namespace()),
        ] {
            if value.is_empty() {
                self.report(&at, element, format!("option `{option}` is not set"));
            }
        }
        if !options.java_multiple_files() {
            self.report(
                &at,
                element,
                "option `java_multiple_files = true` is not set",
            );
        }
    }

    fn lint_service(&mut self, service: &ServiceDescriptorProto, at: &[i32], scope: &str) {
        let full_name = format!("{scope}.{}", service.name());
        self.require_comment(at, &full_name);
        if !is_pascal_case(service.name()) {
            self.report(at, &full_name, "a service name must be PascalCase");
        }
        if !service.name().ends_with("Service") {
            self.report(at, &full_name, "a service name must end in `Service`");
        }
        for (index, method) in service.method.iter().enumerate() {
            let at = child(at, path::SERVICE_METHOD, index);
            let rpc = method.name();
            let rpc_full_name = format!("{full_name}.{rpc}");
            self.require_comment(&at, &rpc_full_name);
            if !is_pascal_case(rpc) {
                self.report(&at, &rpc_full_name, "an RPC name must be PascalCase");
            }
            for (role, type_name, suffix) in [
                ("request", method.input_type(), "Request"),
                ("response", method.output_type(), "Response"),
            ] {
                let expected = format!(".{PACKAGE}.{rpc}{suffix}");
                if type_name != expected {
                    self.report(
                        &at,
                        &rpc_full_name,
                        format!(
                            "its {role} type is {}, it must be {} (a message of its own)",
                            readable(type_name),
                            readable(&expected)
                        ),
                    );
                }
                let own_use = format!("the {role} of {rpc_full_name}");
                let other_uses: Vec<&str> = self.rpc_messages[type_name]
                    .iter()
                    .filter(|other| **other != own_use)
                    .map(String::as_str)
                    .collect();
                if !other_uses.is_empty() {
                    self.report(
                        &at,
                        &rpc_full_name,
                        format!(
                            "its {role} type {} is also {}",
                            readable(type_name),
                            other_uses.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn lint_message(&mut self, message: &DescriptorProto, at: &[i32], scope: &str) {
        // The compiler writes a map field's entry message; it has no source of its own.
        if message
            .options
            .as_ref()
            .is_some_and(|options| options.map_entry())
        {
            return;
        }
        let full_name = format!("{scope}.{}", message.name());
        self.require_comment(at, &full_name);
        if !is_pascal_case(message.name()) {
            self.report(at, &full_name, "a message name must be PascalCase");
        }
        for (index, oneof) in message.oneof_decl.iter().enumerate() {
            if is_synthetic_oneof(message, index) {
                continue;
            }
            let at = child(at, path::MESSAGE_ONEOF, index);
            let oneof_full_name = format!("{full_name}.{}", oneof.name());
            self.require_comment(&at, &oneof_full_name);
            if !is_lower_snake_case(oneof.name()) {
                self.report(
                    &at,
                    &oneof_full_name,
                    "a oneof name must be lower_snake_case",
                );
            }
        }
        for (index, field) in message.field.iter().enumerate() {
            let at = child(at, path::MESSAGE_FIELD, index);
            let name = field.name();
            let field_full_name = format!("{full_name}.{name}");
            self.require_comment(&at, &field_full_name);
            if !is_lower_snake_case(name) {
                self.report(
                    &at,
                    &field_full_name,
                    "a field name must be lower_snake_case",
                );
            }
            if name == "id" {
                self.report(
                    &at,
                    &field_full_name,
                    "a field named `id` must say what it identifies, e.g. `minion_id` or `job_id`",
                );
            }
            let ending = TIME_ENDINGS.iter().find(|ending| name.ends_with(*ending));
            if let Some(ending) = ending
                && INTEGER_TYPES.contains(&field.r#type())
            {
                self.report(
                    &at,
                    &field_full_name,
                    format!(
                        "an integer named `…{ending}` holds a time or a duration: use \
                         google.protobuf.Timestamp or google.protobuf.Duration"
                    ),
                );
            }
            if let Some(uses) = self.rpc_messages.get(field.type_name()) {
                self.report(
                    &at,
                    &field_full_name,
                    format!(
                        "its type {} is {}; give the field a message of its own",
                        readable(field.type_name()),
                        uses.join(", ")
                    ),
                );
            }
        }
        for (index, nested) in message.nested_type.iter().enumerate() {
            self.lint_message(
                nested,
                &child(at, path::MESSAGE_NESTED_MESSAGE, index),
                &full_name,
            );
        }
        for (index, nested) in message.enum_type.iter().enumerate() {
            self.lint_enum(
                nested,
                &child(at, path::MESSAGE_NESTED_ENUM, index),
                &full_name,
            );
        }
    }

    fn lint_enum(&mut self, enumeration: &EnumDescriptorProto, at: &[i32], scope: &str) {
        let full_name = format!("{scope}.{}", enumeration.name());
        self.require_comment(at, &full_name);
        if !is_pascal_case(enumeration.name()) {
            self.report(at, &full_name, "an enum name must be PascalCase");
        }
        let prefix = format!("{}_", upper_snake_case(enumeration.name()));
        let zero_name = format!("{prefix}UNSPECIFIED");
        for (index, value) in enumeration.value.iter().enumerate() {
            let at = child(at, path::ENUM_VALUE, index);
            let name = value.name();
            let value_full_name = format!("{full_name}.{name}");
            self.require_comment(&at, &value_full_name);
            if !is_upper_snake_case(name) {
                self.report(
                    &at,
                    &value_full_name,
                    "an enum value name must be UPPER_SNAKE_CASE",
                );
            }
            if !name.starts_with(&prefix) {
                self.report(
                    &at,
                    &value_full_name,
                    format!("an enum value name must start with its enum's name, `{prefix}`"),
                );
            }
            if value.number() == 0 && name != zero_name {
                self.report(
                    &at,
                    &value_full_name,
                    format!("the zero value must be named `{zero_name}`"),
                );
            }
        }
    }

    fn require_comment(&mut self, at: &[i32], element: &str) {
        let documented = self.locations.get(at).is_some_and(|location| {
            location
                .leading_comments
                .as_deref()
                .is_some_and(|comment| !comment.trim().is_empty())
        });
        if !documented {
            self.report(at, element, "it has no leading comment");
        }
    }

    fn report(&mut self, at: &[i32], element: &str, problem: impl Into<String>) {
        self.violations.push(Violation {
            file: self.file.name().to_owned(),
            line: self.line(at),
            element: element.to_owned(),
            problem: problem.into(),
        });
    }

    /// The 1-based line where the element at `at` starts; the file's first line when the file
    /// has no location for it (file-level problems of a file without a package statement).
    fn line(&self, at: &[i32]) -> u32 {
        self.locations
            .get(at)
            .and_then(|location| location.span.first())
            .and_then(|line| u32::try_from(*line).ok())
            .map_or(1, |line| line + 1)
    }
}

/// The path of the `index`th element of the repeated descriptor field `field` under `parent`.
fn child(parent: &[i32], field: i32, index: usize) -> Vec<i32> {
    let mut path = parent.to_vec();
    path.extend([field, to_i32(index)]);
    path
}

fn to_i32(index: usize) -> i32 {
    i32::try_from(index).expect("a proto file has fewer than 2^31 elements of a kind")
}

/// Whether the `index`th oneof of `message` is the one the compiler makes for a proto3
/// `optional` field, which has no source of its own.
fn is_synthetic_oneof(message: &DescriptorProto, index: usize) -> bool {
    let index = to_i32(index);
    message
        .field
        .iter()
        .filter(|field| field.oneof_index == Some(index))
        .all(|field| field.proto3_optional())
}

/// A type name as written in a proto file: without the descriptor's leading dot.
fn readable(type_name: &str) -> &str {
    type_name.strip_prefix('.').unwrap_or(type_name)
}

fn is_pascal_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_lower_snake_case(name: &str) -> bool {
    is_snake_case(name, |c| c.is_ascii_lowercase())
}

fn is_upper_snake_case(name: &str) -> bool {
    is_snake_case(name, |c| c.is_ascii_uppercase())
}

/// Words of letters and digits, joined by single underscores, starting with a letter.
fn is_snake_case(name: &str, is_letter: fn(char) -> bool) -> bool {
    name.starts_with(is_letter)
        && name.split('_').all(|word| {
            !word.is_empty() && word.chars().all(|c| is_letter(c) || c.is_ascii_digit())
        })
}

/// `HostEventKind` -> `HOST_EVENT_KIND`, `HTTPStatus` -> `HTTP_STATUS`: a word starts at an
/// upper-case letter after a lower-case letter or digit, or before a lower-case letter.
fn upper_snake_case(pascal: &str) -> String {
    let chars: Vec<char> = pascal.chars().collect();
    let mut snake = String::with_capacity(pascal.len() + 4);
    for (index, &c) in chars.iter().enumerate() {
        let starts_word = index > 0
            && c.is_ascii_uppercase()
            && (!chars[index - 1].is_ascii_uppercase()
                || chars
                    .get(index + 1)
                    .is_some_and(|next| next.is_ascii_lowercase()));
        if starts_word {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
    snake
}
