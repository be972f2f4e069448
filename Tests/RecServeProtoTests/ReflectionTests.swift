import Foundation
import SwiftProtobuf
import Testing

@testable import RecServeProto

private func fileName(_ data: Data) throws -> String {
  try Google_Protobuf_FileDescriptorProto(serializedBytes: data).name
}

@Suite struct ReflectionIndexTests {
  let index = ReflectionIndex.shared

  @Test func listsTheFiveServices() {
    #expect(
      Set(index.serviceNames) == [
        "recserve.v1.Recommender",
        "recserve.v1.ModelAdmin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ])
    #expect(index.serviceNames.count == 5)
  }

  @Test func embeddedSetHoldsEveryProto() {
    #expect(Set(index.fileNames) == Set(RecServeDescriptors.protoFiles))
  }

  @Test func fileContainingServiceStartsWithItsFile() throws {
    let files = try #require(index.fileContainingSymbol("recserve.v1.Recommender"))
    #expect(try fileName(files[0]) == "recserve/v1/recserve.proto")
    // Each file once.
    let names = try files.map(fileName)
    #expect(Set(names).count == names.count)
    // The descriptor is the real one: it declares both services and the contract messages.
    let proto = try Google_Protobuf_FileDescriptorProto(serializedBytes: files[0])
    #expect(proto.service.map(\.name) == ["Recommender", "ModelAdmin"])
    #expect(proto.messageType.contains { $0.name == "RankRequest" })
  }

  @Test(arguments: [
    ("recserve.v1.Recommender.Predict", "recserve/v1/recserve.proto"),
    (".recserve.v1.RankRequest", "recserve/v1/recserve.proto"),
    ("recserve.v1.RankRequest.min_score", "recserve/v1/recserve.proto"),
    ("recserve.v1.ModelSpec.selector", "recserve/v1/recserve.proto"),
    ("recserve.v1.TrainProgress.MetricsEntry", "recserve/v1/recserve.proto"),
    ("recserve.v1.VersionState", "recserve/v1/recserve.proto"),
    ("recserve.v1.AVAILABLE", "recserve/v1/recserve.proto"),
    ("recserve.v1", "recserve/v1/recserve.proto"),
    ("grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"),
    ("grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"),
    ("grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"),
    ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"),
    (
      "grpc.reflection.v1alpha.ServerReflectionRequest",
      "grpc/reflection/v1alpha/reflection.proto"
    ),
  ])
  func symbolLookup(symbol: String, file: String) throws {
    let files = try #require(index.fileContainingSymbol(symbol))
    #expect(try fileName(files[0]) == file)
  }

  @Test func unknownNamesAreNil() {
    #expect(index.fileContainingSymbol("recserve.v1.NoSuchThing") == nil)
    #expect(index.fileContainingSymbol("") == nil)
    #expect(index.fileByName("recserve.proto") == nil)
    #expect(index.fileByName("recserve/v1/recserve.proto")?.count == 1)
  }

  @Test func methodsCarryTheirKinds() throws {
    let predict = try #require(index.method(atPath: "/recserve.v1.Recommender/Predict"))
    #expect(!predict.clientStreaming && !predict.serverStreaming)
    #expect(predict.inputType == "recserve.v1.PredictRequest")
    #expect(predict.outputType == "recserve.v1.PredictResponse")
    let train = try #require(index.method(atPath: "/recserve.v1.Recommender/Train"))
    #expect(!train.clientStreaming && train.serverStreaming)
    let reflect = try #require(
      index.method(atPath: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
    #expect(reflect.clientStreaming && reflect.serverStreaming)
    // 7 Recommender + 6 ModelAdmin + 2 Health + 1 + 1 reflection.
    #expect(ServiceDescriptors.methods.count == 17)
    #expect(Set(ServiceDescriptors.methods.map(\.path)).count == 17)
  }

  @Test func dependenciesComeAfterTheFileEachOnce() throws {
    // Hand-built set: c imports a and b, b imports a.
    func file(_ name: String, _ deps: [String], message: String)
      -> Google_Protobuf_FileDescriptorProto
    {
      var f = Google_Protobuf_FileDescriptorProto()
      f.name = name
      f.package = "t"
      f.dependency = deps
      var m = Google_Protobuf_DescriptorProto()
      m.name = message
      f.messageType = [m]
      return f
    }
    var set = Google_Protobuf_FileDescriptorSet()
    set.file = [
      file("a.proto", [], message: "A"), file("b.proto", ["a.proto"], message: "B"),
      file("c.proto", ["a.proto", "b.proto"], message: "C"),
    ]
    let custom = try ReflectionIndex(fileDescriptorSet: set)
    let files = try #require(custom.fileContainingSymbol("t.C"))
    #expect(try files.map(fileName) == ["c.proto", "a.proto", "b.proto"])

    set.file.removeFirst()
    #expect(throws: ReflectionIndexError.self) { try ReflectionIndex(fileDescriptorSet: set) }
  }
}

@Suite struct ReflectionResponderTests {
  let responder = ReflectionResponder()

  @Test func listServices() {
    var request = Grpc_Reflection_V1_ServerReflectionRequest()
    request.host = "localhost:50051"
    request.listServices = ""
    let response = responder.respond(to: request)
    #expect(response.validHost == "localhost:50051")
    #expect(response.originalRequest == request)
    guard case .listServicesResponse(let list)? = response.messageResponse else {
      Issue.record("expected list_services_response, got \(response)")
      return
    }
    #expect(list.service.count == 5)
    #expect(list.service.contains { $0.name == "recserve.v1.Recommender" })
  }

  @Test func unknownSymbolIsNotFound() {
    var request = Grpc_Reflection_V1_ServerReflectionRequest()
    request.fileContainingSymbol = "recserve.v1.Nope"
    let response = responder.respond(to: request)
    #expect(response.originalRequest == request)
    guard case .errorResponse(let error)? = response.messageResponse else {
      Issue.record("expected error_response, got \(response)")
      return
    }
    #expect(error.errorCode == 5)
    #expect(error.errorMessage.contains("recserve.v1.Nope"))
  }

  @Test func fileContainingSymbolAnswersDescriptors() throws {
    var request = Grpc_Reflection_V1_ServerReflectionRequest()
    request.fileContainingSymbol = "grpc.health.v1.Health"
    let response = responder.respond(to: request)
    let files = response.fileDescriptorResponse.fileDescriptorProto
    #expect(files.count == 1)
    #expect(try fileName(files[0]) == "grpc/health/v1/health.proto")
  }

  @Test func extensionsAreNotFoundAndKnownTypesHaveNone() {
    var request = Grpc_Reflection_V1_ServerReflectionRequest()
    var ext = Grpc_Reflection_V1_ExtensionRequest()
    ext.containingType = "recserve.v1.RankRequest"
    ext.extensionNumber = 100
    request.fileContainingExtension = ext
    #expect(responder.respond(to: request).errorResponse.errorCode == 5)

    request.allExtensionNumbersOfType = "recserve.v1.NoSuchType"
    #expect(responder.respond(to: request).errorResponse.errorCode == 5)

    request.allExtensionNumbersOfType = "recserve.v1.RankRequest"
    let response = responder.respond(to: request)
    #expect(response.allExtensionNumbersResponse.baseTypeName == "recserve.v1.RankRequest")
    #expect(response.allExtensionNumbersResponse.extensionNumber.isEmpty)
  }

  @Test func emptyRequestIsUnimplemented() {
    let response = responder.respond(to: Grpc_Reflection_V1_ServerReflectionRequest())
    #expect(response.errorResponse.errorCode == 12)
  }

  @Test func v1alphaAnswersTheSame() {
    var request = Grpc_Reflection_V1alpha_ServerReflectionRequest()
    request.host = "h"
    request.fileByFilename = "recserve/v1/recserve.proto"
    let response = responder.respond(to: request)
    #expect(response.validHost == "h")
    #expect(response.originalRequest == request)
    #expect(response.fileDescriptorResponse.fileDescriptorProto.count == 1)

    request.fileByFilename = "missing.proto"
    #expect(responder.respond(to: request).errorResponse.errorCode == 5)
  }

  @Test func serializedRequestsWorkForBothVersions() throws {
    var request = Grpc_Reflection_V1alpha_ServerReflectionRequest()
    request.listServices = "*"
    let bytes = try responder.respond(toSerializedRequest: request.serializedBytes())
    let response = try Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: bytes)
    #expect(response.listServicesResponse.service.count == 5)
    #expect(response.originalRequest == request)

    #expect(throws: (any Error).self) {
      try responder.respond(toSerializedRequest: Data([0xFF, 0xFF, 0xFF]))
    }
  }
}

@Suite struct MessageTests {
  @Test func rankRequestRoundTrip() throws {
    var request = Recserve_V1_RankRequest()
    request.model.name = "demo"
    request.model.label = "stable"
    request.userID = "42"
    request.recentItems = ["1", "2", "3"]
    request.k = 10
    request.candidates = ["7", "8"]
    request.exclude = ["9"]
    request.excludeSeen = true
    request.minScore = 0.25
    request.diversity = 0.3
    request.popularityPenalty = 0.1
    let bytes: Data = try request.serializedBytes()
    let decoded = try Recserve_V1_RankRequest(serializedBytes: bytes)
    #expect(decoded == request)
    #expect(decoded.hasMinScore)
    #expect(decoded.model.selector == .label("stable"))

    // `optional` keeps an explicit zero apart from unset.
    var zero = Recserve_V1_RankRequest()
    zero.minScore = 0
    let zeroDecoded = try Recserve_V1_RankRequest(serializedBytes: zero.serializedBytes() as Data)
    #expect(zeroDecoded.hasMinScore)
    #expect(!Recserve_V1_RankRequest().hasMinScore)
  }
}
