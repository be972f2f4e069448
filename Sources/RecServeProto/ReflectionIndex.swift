import Foundation
import SwiftProtobuf

/// One RPC method as declared in the protos.
public struct RPCMethodDescriptor: Sendable, Hashable {
  /// The HTTP/2 path gRPC routes on, e.g. `/recserve.v1.Recommender/Predict`.
  public var path: String
  /// The service's full name, e.g. `recserve.v1.Recommender`.
  public var service: String
  /// The method's simple name, e.g. `Predict`.
  public var name: String
  /// Full names of the request and response messages, without a leading dot.
  public var inputType: String
  public var outputType: String
  public var clientStreaming: Bool
  public var serverStreaming: Bool

  public init(
    path: String, service: String, name: String, inputType: String, outputType: String,
    clientStreaming: Bool, serverStreaming: Bool
  ) {
    self.path = path
    self.service = service
    self.name = name
    self.inputType = inputType
    self.outputType = outputType
    self.clientStreaming = clientStreaming
    self.serverStreaming = serverStreaming
  }
}

/// Errors from building a `ReflectionIndex`.
public enum ReflectionIndexError: Error, CustomStringConvertible, Sendable {
  case malformedDescriptorSet(String)
  case duplicateFile(String)
  case missingDependency(file: String, dependency: String)

  public var description: String {
    switch self {
    case .malformedDescriptorSet(let why):
      return "the file descriptor set cannot be parsed: \(why)"
    case .duplicateFile(let name):
      return "the file descriptor set holds \(name) twice"
    case .missingDependency(let file, let dependency):
      return "\(file) imports \(dependency), which the file descriptor set does not hold"
    }
  }
}

/// What gRPC server reflection needs from a set of proto files: the services they declare and,
/// for a file name or a symbol, the serialized `FileDescriptorProto` of the file followed by those
/// of its transitive imports.
///
/// Built once (see `ReflectionIndex.shared`, from the descriptors embedded by
/// `Scripts/gen-protos.sh`); immutable and safe to share between threads.
public struct ReflectionIndex: Sendable {
  /// The index over every proto the package ships (`RecServeDescriptors.fileDescriptorSet`).
  public static let shared: ReflectionIndex = {
    do {
      return try ReflectionIndex(serializedFileDescriptorSet: RecServeDescriptors.fileDescriptorSet)
    } catch {
      fatalError("RecServeProto: the embedded descriptor set is unusable: \(error)")
    }
  }()

  /// File names in the order of the descriptor set.
  public let fileNames: [String]
  /// Full names of every service, in declaration order (files in set order).
  public let serviceNames: [String]
  /// Every method of every service, in declaration order.
  public let methods: [RPCMethodDescriptor]

  /// File name -> serialized FileDescriptorProto.
  private let serializedFiles: [String: Data]
  /// File name -> its direct imports.
  private let dependencies: [String: [String]]
  /// Fully qualified symbol (no leading dot) -> name of the file that declares it.
  private let symbolFiles: [String: String]
  /// Full names of every message type (for all_extension_numbers_of_type).
  private let messageNames: Set<String>
  /// Method path -> index into `methods`.
  private let methodIndex: [String: Int]

  /// Parses a serialized `google.protobuf.FileDescriptorSet` (as `protoc --descriptor_set_out`
  /// writes it; it must hold every imported file, i.e. `--include_imports`).
  public init(serializedFileDescriptorSet data: Data) throws {
    let set: Google_Protobuf_FileDescriptorSet
    do {
      set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data)
    } catch {
      throw ReflectionIndexError.malformedDescriptorSet("\(error)")
    }
    try self.init(fileDescriptorSet: set)
  }

  public init(fileDescriptorSet set: Google_Protobuf_FileDescriptorSet) throws {
    var fileNames: [String] = []
    var serializedFiles: [String: Data] = [:]
    var dependencies: [String: [String]] = [:]
    var symbols = SymbolTable()
    var messageNames = Set<String>()
    var serviceNames: [String] = []
    var methods: [RPCMethodDescriptor] = []

    for file in set.file {
      guard serializedFiles[file.name] == nil else {
        throw ReflectionIndexError.duplicateFile(file.name)
      }
      fileNames.append(file.name)
      do {
        serializedFiles[file.name] = try file.serializedBytes()
      } catch {
        throw ReflectionIndexError.malformedDescriptorSet("\(file.name): \(error)")
      }
      dependencies[file.name] = file.dependency

      let package = file.package
      // Packages resolve to the first file that declares them, and so do their prefixes
      // (`recserve`, `recserve.v1`), as protobuf's DescriptorPool does.
      if !package.isEmpty {
        var prefix = ""
        for component in package.split(separator: ".") {
          prefix = prefix.isEmpty ? String(component) : prefix + "." + component
          symbols.addIfAbsent(prefix, file: file.name)
        }
      }

      for message in file.messageType {
        symbols.addMessage(
          message, scope: package, file: file.name, messageNames: &messageNames)
      }
      for enumType in file.enumType {
        symbols.addEnum(enumType, scope: package, file: file.name)
      }
      for ext in file.extension {
        symbols.add(qualified(package, ext.name), file: file.name)
      }
      for service in file.service {
        let serviceName = qualified(package, service.name)
        serviceNames.append(serviceName)
        symbols.add(serviceName, file: file.name)
        for method in service.method {
          symbols.add(serviceName + "." + method.name, file: file.name)
          methods.append(
            RPCMethodDescriptor(
              path: "/\(serviceName)/\(method.name)",
              service: serviceName,
              name: method.name,
              inputType: stripLeadingDot(method.inputType),
              outputType: stripLeadingDot(method.outputType),
              clientStreaming: method.clientStreaming,
              serverStreaming: method.serverStreaming))
        }
      }
    }

    for (file, imports) in dependencies {
      for dependency in imports where serializedFiles[dependency] == nil {
        throw ReflectionIndexError.missingDependency(file: file, dependency: dependency)
      }
    }

    self.fileNames = fileNames
    self.serviceNames = serviceNames
    self.methods = methods
    self.serializedFiles = serializedFiles
    self.dependencies = dependencies
    self.symbolFiles = symbols.files
    self.messageNames = messageNames
    var methodIndex: [String: Int] = [:]
    for (i, method) in methods.enumerated() where methodIndex[method.path] == nil {
      methodIndex[method.path] = i
    }
    self.methodIndex = methodIndex
  }

  /// The serialized FileDescriptorProto of `name` (e.g. `recserve/v1/recserve.proto`) followed by
  /// those of its transitive imports, each once; nil when no such file is known.
  public func fileByName(_ name: String) -> [Data]? {
    guard serializedFiles[name] != nil else { return nil }
    var seen = Set<String>()
    var result: [Data] = []
    appendWithDependencies(name, seen: &seen, into: &result)
    return result
  }

  /// The file that declares `symbol` (a package, service, method as `pkg.Service.Method`,
  /// message, nested message, enum, enum value, field, oneof or extension; fully qualified,
  /// a leading dot is accepted), as `fileByName` returns it; nil when the symbol is unknown.
  public func fileContainingSymbol(_ symbol: String) -> [Data]? {
    guard let file = fileName(containingSymbol: symbol) else { return nil }
    return fileByName(file)
  }

  /// The name of the file that declares `symbol`, or nil.
  public func fileName(containingSymbol symbol: String) -> String? {
    symbolFiles[stripLeadingDot(symbol)]
  }

  /// Whether `name` is the full name of a message type (a leading dot is accepted).
  public func isMessageType(_ name: String) -> Bool {
    messageNames.contains(stripLeadingDot(name))
  }

  /// The method registered at `path` (e.g. `/recserve.v1.Recommender/Rank`), or nil.
  public func method(atPath path: String) -> RPCMethodDescriptor? {
    methodIndex[path].map { methods[$0] }
  }

  private func appendWithDependencies(
    _ name: String, seen: inout Set<String>, into result: inout [Data]
  ) {
    guard seen.insert(name).inserted, let bytes = serializedFiles[name] else { return }
    result.append(bytes)
    for dependency in dependencies[name] ?? [] {
      appendWithDependencies(dependency, seen: &seen, into: &result)
    }
  }
}

/// The methods of every service the package declares, derived from the embedded descriptors.
public enum ServiceDescriptors {
  /// Every method of every service in `Protos/`, e.g. `/recserve.v1.Recommender/Predict`
  /// (unary) or `/grpc.reflection.v1.ServerReflection/ServerReflectionInfo` (bidirectional).
  public static var methods: [RPCMethodDescriptor] { ReflectionIndex.shared.methods }
  /// Full names of every service in `Protos/`.
  public static var serviceNames: [String] { ReflectionIndex.shared.serviceNames }
}

// MARK: - Building the symbol table

private func qualified(_ scope: String, _ name: String) -> String {
  scope.isEmpty ? name : scope + "." + name
}

private func stripLeadingDot(_ name: String) -> String {
  name.hasPrefix(".") ? String(name.dropFirst()) : name
}

private struct SymbolTable {
  var files: [String: String] = [:]

  /// Declarations win over packages; among declarations the first one wins (protoc rejects
  /// duplicates anyway).
  mutating func add(_ symbol: String, file: String) {
    if files[symbol] == nil || packageSymbols.contains(symbol) {
      files[symbol] = file
      packageSymbols.remove(symbol)
    }
  }

  mutating func addIfAbsent(_ package: String, file: String) {
    if files[package] == nil {
      files[package] = file
      packageSymbols.insert(package)
    }
  }

  private var packageSymbols = Set<String>()

  mutating func addMessage(
    _ message: Google_Protobuf_DescriptorProto, scope: String, file: String,
    messageNames: inout Set<String>
  ) {
    let name = qualified(scope, message.name)
    add(name, file: file)
    messageNames.insert(name)
    for field in message.field {
      add(name + "." + field.name, file: file)
    }
    for oneof in message.oneofDecl {
      add(name + "." + oneof.name, file: file)
    }
    for ext in message.extension {
      add(name + "." + ext.name, file: file)
    }
    for nested in message.nestedType {
      addMessage(nested, scope: name, file: file, messageNames: &messageNames)
    }
    for enumType in message.enumType {
      addEnum(enumType, scope: name, file: file)
    }
  }

  mutating func addEnum(
    _ enumType: Google_Protobuf_EnumDescriptorProto, scope: String, file: String
  ) {
    let name = qualified(scope, enumType.name)
    add(name, file: file)
    for value in enumType.value {
      // Protobuf scopes enum values beside their enum (`recserve.v1.LOADING`); accept the
      // name under the enum too (`recserve.v1.VersionState.LOADING`), which people also type.
      add(qualified(scope, value.name), file: file)
      add(name + "." + value.name, file: file)
    }
  }
}
