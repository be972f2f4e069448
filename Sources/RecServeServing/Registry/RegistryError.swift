/// Why the registry refused a request or could not carry it out. Its messages name the model,
/// version, label or file at fault and say what was (not) changed; `ErrorStatus.swift` gives each
/// reason the status a client sees, so the registry does not depend on the transport.
public struct RegistryError: Error, Sendable, CustomStringConvertible {
  public enum Reason: Sendable {
    /// The request names nothing valid (an empty name, a negative version, a bad fraction).
    case invalidRequest
    /// The model, version or label does not exist.
    case notFound
    /// The request is valid but the state forbids it (a version that failed verification, a
    /// malformed labels.json, unloading the version a label serves).
    case refused
    /// A file could not be read or written now; trying again may work.
    case unavailable
    /// The caller's deadline passed while the registry was busy; nothing was changed.
    case deadlinePassed
    /// The caller cancelled while the registry was busy; nothing was changed.
    case cancelled
  }

  public var reason: Reason
  public var message: String

  public init(_ reason: Reason, _ message: String) {
    self.reason = reason
    self.message = message
  }

  public static func invalidRequest(_ message: String) -> RegistryError {
    RegistryError(.invalidRequest, message)
  }
  public static func notFound(_ message: String) -> RegistryError {
    RegistryError(.notFound, message)
  }
  public static func refused(_ message: String) -> RegistryError {
    RegistryError(.refused, message)
  }

  public var description: String { message }
}
