import RecServeModels
import RecServeRPC

// The one place where the models' errors get the gRPC status a client sees. Their messages are
// written for people (they name the field, file or line); any error not mapped here is a bug and
// reaches the client as a generic INTERNAL with a request id (see `StatusReporting`).

extension DataError: StatusReporting {
  /// Bad data sent or named by the client.
  public var statusCode: StatusCode { .invalidArgument }
  public var statusMessage: String { description }
}

extension ModelLoadError: StatusReporting {
  /// A version that could not be read (I/O: try again) or that is broken.
  public var statusCode: StatusCode { ioError != nil ? .unavailable : .failedPrecondition }
  public var statusMessage: String { reason }
}

extension TrainingError: StatusReporting {
  public var statusCode: StatusCode {
    switch self {
    case .cancelled: return .cancelled
    case .invalidConfiguration, .invalidData: return .invalidArgument
    case .notImplemented: return .unimplemented
    }
  }
  public var statusMessage: String { description }
}

extension RegistryError: StatusReporting {
  public var statusCode: StatusCode {
    switch reason {
    case .invalidRequest: return .invalidArgument
    case .notFound: return .notFound
    case .refused: return .failedPrecondition
    case .unavailable: return .unavailable
    case .deadlinePassed: return .deadlineExceeded
    case .cancelled: return .cancelled
    }
  }
  public var statusMessage: String { message }
}

extension EventError: StatusReporting {
  public var statusCode: StatusCode {
    switch self {
    case .unavailable: return .unavailable
    case .busy: return .resourceExhausted
    case .invalid: return .invalidArgument
    }
  }
  public var statusMessage: String { description }
}
