import Foundation
import Testing

@testable import RecServeModels

/// Listing the repository tells "not there" (ENOENT, ENOTDIR) from "could not be read" (any
/// other error): the registry keeps what it had for the second and drops only the first.
@Suite struct RepositoryScanTests {
  /// A repository with model `m`, versions 1 and 2.
  func repository() throws -> TempDir {
    let dir = TempDir()
    var config = quickConfig()
    config.epochs = 1
    for _ in 0..<2 {
      _ = try trainAndPublishMF(
        data: smallSynthetic(), config: config, holdout: 0, modelsDirectory: dir.path, name: "m")
    }
    return dir
  }

  /// Moves `path` aside (to a dot-name, which is neither a model nor a version) and puts a
  /// symlink loop in its place: stat, open and opendir give ELOOP.
  func loop(_ path: String) throws {
    let aside =
      (path as NSString).deletingLastPathComponent + "/.aside-"
      + (path as NSString).lastPathComponent
    try FileManager.default.moveItem(atPath: path, toPath: aside)
    #expect(symlink((path as NSString).lastPathComponent, path) == 0)
  }

  @Test func absenceIsOnlyENOENTAndENOTDIR() {
    #expect(FileError(path: "p", code: ENOENT, operation: "list").isAbsence)
    #expect(FileError(path: "p", code: ENOTDIR, operation: "list").isAbsence)
    for code in [ELOOP, EACCES, EIO, EMFILE, EISDIR] {
      #expect(!FileError(path: "p", code: code, operation: "list").isAbsence)
    }
  }

  @Test func aMissingFolderIsGoneAndAnUnreadableOneThrows() throws {
    let dir = try repository()
    #expect(try ModelStore.scanModels(dir.path + "/nothing-here") == nil)
    #expect(try ModelStore.scanVersions(dir.path, name: "absent") == nil)
    #expect(try ModelStore.scanVersions(dir.path, name: "m")?.present == [1, 2])

    try loop(dir.path + "/m")
    // The repository lists `m` as an entry it could not look at, not as a missing model.
    let models = try #require(try ModelStore.scanModels(dir.path))
    #expect(models.present.isEmpty)
    #expect(models.unreadable["m"]?.code == ELOOP)
    #expect(throws: FileError.self) { try ModelStore.modelNames(dir.path) }
    // Listing the model itself fails with the error, rather than answering "no versions".
    do {
      _ = try ModelStore.scanVersions(dir.path, name: "m")
      Issue.record("listing a symlink loop did not fail")
    } catch let error as FileError {
      #expect(error.code == ELOOP && error.path == dir.path + "/m")
    }
  }

  @Test func anUnreadableVersionIsNeitherPresentNorGone() throws {
    let dir = try repository()
    try loop(dir.path + "/m/2")
    let versions = try #require(try ModelStore.scanVersions(dir.path, name: "m"))
    #expect(versions.present == [1])
    #expect(versions.unreadable[2]?.code == ELOOP)
    // Its number stays taken: the next publish is 3.
    #expect(try ModelStore.latestVersion(dir.path, name: "m") == 2)
    // Loading it says it could not be read (worth retrying), not that it is broken.
    do {
      _ = try ModelStore.load(versionDirectory: dir.path + "/m/2")
      Issue.record("loading a symlink loop did not fail")
    } catch let error as ModelLoadError {
      #expect(error.ioError == ELOOP)
    }
    do {
      _ = try ModelStore.load(versionDirectory: dir.path + "/m/9")
      Issue.record("loading a missing version did not fail")
    } catch let error as ModelLoadError {
      #expect(error.ioError == nil)
    }
  }
}
