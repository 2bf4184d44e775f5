//! [`Code`]: the machine-readable part of a reason.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A machine-readable cancellation code, such as `"budget"` or `"shutdown"`.
///
/// A code made from a `&'static str` is stored as the reference itself; one made from a
/// `String` is stored once behind an `Arc`, so cloning a `Code` never allocates.
///
/// An empty code is valid: it is kept as it is, and [`Cancelled::cancelled_by("")`] matches it.
///
/// [`Cancelled::cancelled_by("")`]: crate::Cancelled::cancelled_by
///
/// # Examples
///
/// ```
/// use async_fence::Code;
///
/// let a = Code::from("budget");
/// let b = Code::from(String::from("budget"));
/// assert_eq!(a, b);
/// assert_eq!(a, "budget");
/// assert_eq!(b.to_string(), "budget");
/// ```
#[derive(Clone)]
pub struct Code(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Code {
    /// Returns the code as a string slice.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(async_fence::Code::from("db").as_str(), "db");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for Code {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Code {
    fn from(code: &'static str) -> Code {
        Code(Repr::Static(code))
    }
}

impl From<String> for Code {
    fn from(code: String) -> Code {
        Code(Repr::Shared(code.into()))
    }
}

impl From<&Code> for Code {
    fn from(code: &Code) -> Code {
        code.clone()
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Code {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Code) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Code {}

impl Hash for Code {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
