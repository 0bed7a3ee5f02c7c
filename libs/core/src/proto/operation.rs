//! Typed operations: each request type names, once, the service that answers
//! it, the operation (the last subject token) and the type of its reply. The
//! bus client (`Bus::send`, `Bus::send_to`) and the serving loop
//! (`Handlers::on`) take these from the type, so no call site writes a
//! service name, an operation name or a reply type by hand, and a mismatch
//! is a compile error instead of a `500` at run time.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The receiving end of a call: a service, or the regional stores (a caller
/// allowed a store operation may call it in any region).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Service(&'static str),
    Store,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service(name) => f.write_str(name),
            Target::Store => f.write_str("store"),
        }
    }
}

/// A request on the bus, tied to who answers it and what it answers.
pub trait Operation: Serialize + DeserializeOwned + Send + Sync + 'static {
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Who answers it.
    const TARGET: Target;
    /// The operation: the last token of its subject.
    const NAME: &'static str;
}

/// An operation of a global service (`<prefix>.<service>.v1.<op>`): sent with
/// `Bus::send`.
pub trait ServiceOperation: Operation {}

/// An operation of the regional stores (`<prefix>.store.<region>.v1.<op>`):
/// sent with `Bus::send_to(region, ..)`.
pub trait StoreOperation: Operation {}

/// One operation as data, for the permission table's checks and tooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationInfo {
    pub target: Target,
    pub name: &'static str,
    pub request: &'static str,
    pub reply: &'static str,
}

/// Declares the operations of one service module: `Request => Reply = NAME`
/// for each, and the module's `OPERATIONS` list.
macro_rules! operations {
    (service $service:literal { $($request:ty => $reply:ty = $name:ident,)* }) => {
        $crate::proto::operation::operations!(@impl ServiceOperation,
            $crate::proto::operation::Target::Service($service); $($request => $reply = $name,)*);
    };
    (store { $($request:ty => $reply:ty = $name:ident,)* }) => {
        $crate::proto::operation::operations!(@impl StoreOperation,
            $crate::proto::operation::Target::Store; $($request => $reply = $name,)*);
    };
    (@impl $marker:ident, $target:expr; $($request:ty => $reply:ty = $name:ident,)*) => {
        $(
            impl $crate::proto::operation::Operation for $request {
                type Reply = $reply;
                const TARGET: $crate::proto::operation::Target = $target;
                const NAME: &'static str = $name;
            }
            impl $crate::proto::operation::$marker for $request {}
        )*
        /// Every operation of this module.
        pub const OPERATIONS: &[$crate::proto::operation::OperationInfo] = &[
            $($crate::proto::operation::OperationInfo {
                target: $target,
                name: $name,
                request: stringify!($request),
                reply: stringify!($reply),
            },)*
        ];
    };
}
pub(crate) use operations;

/// Every operation of every service.
pub fn all() -> Vec<OperationInfo> {
    [
        super::account::OPERATIONS,
        super::auth::OPERATIONS,
        super::session::OPERATIONS,
        super::user::OPERATIONS,
        super::store::OPERATIONS,
        // deletion
        super::organization::OPERATIONS,
        super::deletion::OPERATIONS,
        super::deletion::directory::OPERATIONS,
        super::deletion::store::OPERATIONS,
        super::deletion::auth::OPERATIONS,
        super::deletion::account::OPERATIONS,
        super::moves::OPERATIONS,
        super::moves::directory::OPERATIONS,
        super::moves::store::OPERATIONS,
        super::webhook::OPERATIONS,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_is_declared_once_per_target() {
        let all = all();
        assert!(all.len() > 60, "{}", all.len());
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    !(a.target == b.target && a.name == b.name),
                    "{}.{} declared twice",
                    a.target,
                    a.name
                );
            }
        }
    }
}
