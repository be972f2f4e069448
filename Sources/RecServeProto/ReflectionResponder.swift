import Foundation
import SwiftProtobuf

/// Answers gRPC server reflection requests (`grpc.reflection.v1.ServerReflection` and
/// `grpc.reflection.v1alpha.ServerReflection`) from a `ReflectionIndex`.
///
/// Pure: one request in, one response out, no state between the messages of a stream. The
/// server runtime calls it for each message of a `ServerReflectionInfo` stream and sends the
/// result back. Failures are answered in-band with an `error_response` (gRPC status code and
/// message), as the reflection protocol wants; the stream itself stays OK.
public struct ReflectionResponder: Sendable {
  public let index: ReflectionIndex
  /// What `list_services` answers.
  public let services: [String]

  /// - Parameters:
  ///   - index: where files and symbols are looked up.
  ///   - services: the services `list_services` reports; by default every service in `index`.
  ///     Pass the ones the server actually registers if that is fewer.
  public init(index: ReflectionIndex = .shared, services: [String]? = nil) {
    self.index = index
    self.services = services ?? index.serviceNames
  }

  /// The answer to one v1 request.
  public func respond(
    to request: Grpc_Reflection_V1_ServerReflectionRequest
  ) -> Grpc_Reflection_V1_ServerReflectionResponse {
    var response = Grpc_Reflection_V1_ServerReflectionResponse()
    response.validHost = request.host
    response.originalRequest = request

    switch request.messageRequest {
    case .listServices:
      var list = Grpc_Reflection_V1_ListServiceResponse()
      list.service = services.map { name in
        var service = Grpc_Reflection_V1_ServiceResponse()
        service.name = name
        return service
      }
      response.messageResponse = .listServicesResponse(list)

    case .fileByFilename(let name):
      if let files = index.fileByName(name) {
        response.messageResponse = .fileDescriptorResponse(descriptors(files))
      } else {
        response.messageResponse = .errorResponse(
          error(.notFound, "no proto file named '\(name)' is served here"))
      }

    case .fileContainingSymbol(let symbol):
      if let files = index.fileContainingSymbol(symbol) {
        response.messageResponse = .fileDescriptorResponse(descriptors(files))
      } else {
        response.messageResponse = .errorResponse(
          error(
            .notFound,
            "symbol '\(symbol)' not found: expected a fully qualified name such as "
              + "'recserve.v1.Recommender' or 'recserve.v1.RankRequest'"))
      }

    case .fileContainingExtension(let ext):
      response.messageResponse = .errorResponse(
        error(
          .notFound,
          "extension \(ext.extensionNumber) of '\(ext.containingType)' not found: "
            + "the protos served here declare no extensions"))

    case .allExtensionNumbersOfType(let type):
      if index.isMessageType(type) {
        // A known message with no extensions (the served protos declare none), as gRPC's own
        // reflection service answers it.
        var numbers = Grpc_Reflection_V1_ExtensionNumberResponse()
        numbers.baseTypeName = type.hasPrefix(".") ? String(type.dropFirst()) : type
        response.messageResponse = .allExtensionNumbersResponse(numbers)
      } else {
        response.messageResponse = .errorResponse(
          error(.notFound, "message type '\(type)' not found"))
      }

    case nil:
      response.messageResponse = .errorResponse(
        error(
          .unimplemented,
          "the request names no known message_request (expected list_services, "
            + "file_by_filename, file_containing_symbol, file_containing_extension or "
            + "all_extension_numbers_of_type)"))
    }
    return response
  }

  /// The answer to one v1alpha request. The v1alpha messages are wire-identical to v1's, so the
  /// request is converted, answered and converted back.
  public func respond(
    to request: Grpc_Reflection_V1alpha_ServerReflectionRequest
  ) -> Grpc_Reflection_V1alpha_ServerReflectionResponse {
    do {
      let v1Request: Grpc_Reflection_V1_ServerReflectionRequest = try convert(request)
      return try convert(respond(to: v1Request))
    } catch {
      var response = Grpc_Reflection_V1alpha_ServerReflectionResponse()
      response.validHost = request.host
      response.originalRequest = request
      var failure = Grpc_Reflection_V1alpha_ErrorResponse()
      failure.errorCode = StatusCode.internalError.rawValue
      failure.errorMessage = "cannot convert the v1alpha reflection message: \(error)"
      response.errorResponse = failure
      return response
    }
  }

  /// The serialized answer to one serialized request. Works for v1 and v1alpha alike (their
  /// messages are wire-identical). Throws when `bytes` is not a `ServerReflectionRequest`; the
  /// runtime should then end the stream with INVALID_ARGUMENT.
  public func respond(toSerializedRequest bytes: Data) throws -> Data {
    let request = try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: bytes)
    return try respond(to: request).serializedBytes()
  }

  // MARK: - Helpers

  /// The gRPC status codes used in `error_response`.
  private enum StatusCode: Int32 {
    case notFound = 5
    case unimplemented = 12
    case internalError = 13
  }

  private func descriptors(_ files: [Data]) -> Grpc_Reflection_V1_FileDescriptorResponse {
    var response = Grpc_Reflection_V1_FileDescriptorResponse()
    response.fileDescriptorProto = files
    return response
  }

  private func error(_ code: StatusCode, _ message: String) -> Grpc_Reflection_V1_ErrorResponse {
    var response = Grpc_Reflection_V1_ErrorResponse()
    response.errorCode = code.rawValue
    response.errorMessage = message
    return response
  }

  private func convert<From: Message, To: Message>(_ message: From) throws -> To {
    let bytes: Data = try message.serializedBytes()
    return try To(serializedBytes: bytes)
  }
}
