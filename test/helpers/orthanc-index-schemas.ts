/**
 * The SQLite schemas of Orthanc's index over the versions still in use, as Orthanc's own sources
 * create them (triggers, which call C++ functions, left out: reading never fires them):
 * - PrepareDatabase.sql (schema version 6, since Orthanc 0.9.5) and InstallTrackAttachmentsSize.sql
 *   (1.5.1), jodogne/OrthancMirror OrthancServer/Sources/Database/, commit e651db55f15e;
 * - InstallLabelsTable.sql (1.12.0), same folder;
 * - InstallRevisionAndCustomData.sql (1.12.8: revision on Metadata and AttachedFiles, customData,
 *   DeletedFiles), commit 65e04055c3f2, and InstallKeyValueStoresAndQueues.sql (1.12.8);
 * - Upgrade6To7.sql, an experimental branch that set the schema version to 7: refused by readers.
 * Orthanc writes "6" in double quotes; this SQLite build takes string literals in single quotes only.
 */
export type IndexSchemaVariant = '1.5-1.11' | '1.12.0-1.12.7' | '1.12.8' | 'version-7'

const VERSION_6 = `
CREATE TABLE GlobalProperties(property INTEGER PRIMARY KEY, value TEXT);
CREATE TABLE Resources(internalId INTEGER PRIMARY KEY AUTOINCREMENT, resourceType INTEGER, publicId TEXT, parentId INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE);
CREATE TABLE MainDicomTags(id INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, tagGroup INTEGER, tagElement INTEGER, value TEXT, PRIMARY KEY(id, tagGroup, tagElement));
CREATE TABLE DicomIdentifiers(id INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, tagGroup INTEGER, tagElement INTEGER, value TEXT, PRIMARY KEY(id, tagGroup, tagElement));
CREATE TABLE Metadata(id INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, type INTEGER, value TEXT, PRIMARY KEY(id, type));
CREATE TABLE AttachedFiles(id INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, fileType INTEGER, uuid TEXT, compressedSize INTEGER, uncompressedSize INTEGER, compressionType INTEGER, uncompressedMD5 TEXT, compressedMD5 TEXT, PRIMARY KEY(id, fileType));
CREATE TABLE Changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, changeType INTEGER, internalId INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, resourceType INTEGER, date TEXT);
CREATE TABLE ExportedResources(seq INTEGER PRIMARY KEY AUTOINCREMENT, resourceType INTEGER, publicId TEXT, remoteModality TEXT, patientId TEXT, studyInstanceUid TEXT, seriesInstanceUid TEXT, sopInstanceUid TEXT, date TEXT);
CREATE TABLE PatientRecyclingOrder(seq INTEGER PRIMARY KEY AUTOINCREMENT, patientId INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE);
CREATE INDEX ChildrenIndex ON Resources(parentId);
CREATE INDEX PublicIndex ON Resources(publicId);
CREATE INDEX ResourceTypeIndex ON Resources(resourceType);
CREATE INDEX PatientRecyclingIndex ON PatientRecyclingOrder(patientId);
CREATE INDEX MainDicomTagsIndex1 ON MainDicomTags(id);
CREATE INDEX DicomIdentifiersIndex1 ON DicomIdentifiers(id);
CREATE INDEX DicomIdentifiersIndex2 ON DicomIdentifiers(tagGroup, tagElement);
CREATE INDEX DicomIdentifiersIndexValues ON DicomIdentifiers(value COLLATE BINARY);
CREATE INDEX ChangesIndex ON Changes(internalId);
INSERT INTO GlobalProperties VALUES (1, '6');
CREATE TABLE GlobalIntegers(key INTEGER PRIMARY KEY, value INTEGER);
INSERT INTO GlobalProperties VALUES (6, 1);
INSERT INTO GlobalIntegers SELECT 0, IFNULL(SUM(compressedSize), 0) FROM AttachedFiles;
INSERT INTO GlobalIntegers SELECT 1, IFNULL(SUM(uncompressedSize), 0) FROM AttachedFiles;
`

/** InstallLabelsTable.sql */
export const INSTALL_LABELS = `
CREATE TABLE Labels(id INTEGER REFERENCES Resources(internalId) ON DELETE CASCADE, label TEXT NOT NULL, PRIMARY KEY(id, label));
CREATE INDEX LabelsIndex1 ON Labels(id);
CREATE INDEX LabelsIndex2 ON Labels(label);
`

/** InstallRevisionAndCustomData.sql and InstallKeyValueStoresAndQueues.sql, tables and columns. */
export const INSTALL_REVISION_AND_CUSTOM_DATA = `
ALTER TABLE Metadata ADD COLUMN revision INTEGER;
ALTER TABLE AttachedFiles ADD COLUMN revision INTEGER;
ALTER TABLE AttachedFiles ADD COLUMN customData TEXT;
CREATE TABLE DeletedFiles(uuid TEXT NOT NULL, customData TEXT);
INSERT INTO GlobalProperties VALUES (7, 1);
CREATE TABLE KeyValueStores(storeId TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(storeId, key));
CREATE TABLE Queues (id INTEGER PRIMARY KEY AUTOINCREMENT, queueId TEXT NOT NULL, value TEXT);
CREATE INDEX QueuesIndex ON Queues (queueId, id);
`

/** Upgrade6To7.sql (never released): a customData column and schema version 7. */
const UPGRADE_6_TO_7 = `
ALTER TABLE AttachedFiles ADD COLUMN customData TEXT;
UPDATE GlobalProperties SET value='7' WHERE property=1;
`

export function schemaStatements(variant: IndexSchemaVariant): string {
  switch (variant) {
    case '1.5-1.11':
      return VERSION_6
    case '1.12.0-1.12.7':
      return VERSION_6 + INSTALL_LABELS
    case '1.12.8':
      return VERSION_6 + INSTALL_LABELS + INSTALL_REVISION_AND_CUSTOM_DATA
    case 'version-7':
      return VERSION_6 + UPGRADE_6_TO_7
  }
}
