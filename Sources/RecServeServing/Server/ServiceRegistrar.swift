import Foundation
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// Registers one proto service's methods on an `RPCServer`. A method is named as in the proto
/// and checked against the proto's method table (`ReflectionIndex`): it must exist, with the
/// handler's request and response types and the proto's streaming shape, or registration stops
/// the program (a typo never answers UNIMPLEMENTED in production). Every method gets the
/// interceptors `interceptors(method)` gives it, so a policy such as "every admin method needs
/// the token" covers methods added later by construction. `finish()` checks that every method
/// of the service was registered.
public final class ServiceRegistrar {
  public let server: RPCServer
  public let service: String
  private let interceptors: (RPCMethodDescriptor) -> [any ServerInterceptor]
  private let methods: [String: RPCMethodDescriptor]
  private var registered: Set<String> = []

  public init(
    server: RPCServer, service: String, index: ReflectionIndex = .shared,
    interceptors: @escaping (RPCMethodDescriptor) -> [any ServerInterceptor] = { _ in [] }
  ) {
    self.server = server
    self.service = service
    self.interceptors = interceptors
    let declared = index.methods.filter { $0.service == service }
    precondition(!declared.isEmpty, "no service '\(service)' in Protos/")
    methods = Dictionary(uniqueKeysWithValues: declared.map { ($0.name, $0) })
  }

  /// Every method of the service was registered.
  public func finish() {
    let missing = Set(methods.keys).subtracting(registered).sorted()
    precondition(missing.isEmpty, "\(service): no handler for \(missing.joined(separator: ", "))")
  }

  /// Registers `handler` for method `name`, after checking it against the proto.
  public func register<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ name: String, _ request: Request.Type, _ response: Response.Type,
    clientStreaming: Bool = false, serverStreaming: Bool = false, _ handler: MethodHandler
  ) {
    register(
      name, request: Request.protoMessageName, response: Response.protoMessageName,
      clientStreaming: clientStreaming, serverStreaming: serverStreaming, handler)
  }

  /// Registers `handler` for method `name`, whose request and response messages have these
  /// full names, after checking it against the proto.
  public func register(
    _ name: String, request: String, response: String, clientStreaming: Bool = false,
    serverStreaming: Bool = false, _ handler: MethodHandler
  ) {
    guard let method = methods[name] else {
      preconditionFailure(
        "\(service) has no method '\(name)' in Protos/ (it has \(methods.keys.sorted().joined(separator: ", ")))"
      )
    }
    precondition(
      method.inputType == request && method.outputType == response,
      "\(method.path) takes \(method.inputType) and returns \(method.outputType), not \(request) and \(response)"
    )
    precondition(
      method.clientStreaming == clientStreaming && method.serverStreaming == serverStreaming,
      "\(method.path): the handler's streaming shape differs from the proto's")
    precondition(registered.insert(name).inserted, "\(method.path) registered twice")
    server.register(method.path, handler.intercepted(by: interceptors(method)))
  }

  /// A unary method answered on the thread that received it.
  public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ name: String, _ body: @escaping @Sendable (Request, ServerContext) throws -> Response
  ) {
    register(
      name, Request.self, Response.self,
      .unary { context, bytes in
        try body(try Self.decode(Request.self, bytes), context).serializedBytes()
      })
  }

  /// A unary method whose handler may wait long: served on a thread of its own (the runtime's
  /// server-streaming path and its pool, answering exactly one message), so it never holds the
  /// completion-queue thread that accepted it. On the wire it is an ordinary unary call.
  public func waitingUnary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ name: String, _ body: @escaping @Sendable (Request, ServerContext) throws -> Response
  ) {
    register(
      name, Request.self, Response.self,
      .serverStreaming { context, bytes, writer in
        let response = try body(try Self.decode(Request.self, bytes), context)
        try writer.send(try response.serializedBytes())
      })
  }

  /// A unary method whose requests are checked and priced on the thread that received them:
  /// cheap ones are answered there, those over `inline` multiply-adds run on the work pool.
  /// Either way the work stops at the call's deadline or when the client goes away.
  public func planned<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ name: String, inline: Int,
    _ plan: @escaping @Sendable (Request, ServerContext) throws -> RecommenderService.Plan<Response>
  ) {
    register(
      name, Request.self, Response.self,
      .unaryDeferrable { context, bytes in
        let planned = try plan(try Self.decode(Request.self, bytes), context)
        if planned.work <= inline {
          return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
        }
        return .deferred { context in
          try planned.run({ try context.checkDeadline() }).serializedBytes()
        }
      })
  }

  /// A server-streaming method: `body` sends `Response`s through the writer.
  public func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ name: String, _ response: Response.Type,
    _ body: @escaping @Sendable (Request, ServerContext, ServerStreamWriter) throws -> Void
  ) {
    register(
      name, Request.self, Response.self, serverStreaming: true,
      .serverStreaming { context, bytes, writer in
        try body(try Self.decode(Request.self, bytes), context, writer)
      })
  }

  /// The request, or INVALID_ARGUMENT naming its message type.
  public static func decode<Request: SwiftProtobuf.Message>(
    _ type: Request.Type, _ bytes: some SwiftProtobufContiguousBytes
  ) throws -> Request {
    do {
      return try Request(serializedBytes: bytes)
    } catch {
      throw RPCError.invalidArgument(
        "request body is not a valid \(Request.protoMessageName): \(error)")
    }
  }
}
