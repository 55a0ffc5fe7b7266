/** @type {AppTypes.Config} */
// Tessera's OHIF configuration. scripts/install-viewer copies this file over
// the app-config.js of the prebuilt @ohif/app dist in web/dist-viewer/.
//
// The viewer is served by Tessera itself under /viewer, and every DICOMweb
// root is same-origin and relative, so no CORS setup is needed and the same
// file works whatever host and port Tessera listens on.
window.config = {
  name: 'tessera',
  // Must match the prefix the assets were rewritten to (scripts/install-viewer).
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  // Same-origin, so the cross-origin warning never applies.
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  // No "investigational use" modal on every first visit.
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: {
    interaction: 100,
    thumbnail: 5,
    prefetch: 25,
  },
  showErrorDetails: 'always',
  defaultDataSourceName: 'tessera',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'tessera',
      configuration: {
        friendlyName: 'Tessera',
        name: 'tessera',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        wadoUriRoot: '/wado',
        // Tessera answers includefield (keywords, tags, "all").
        qidoSupportsIncludeField: true,
        // Frames come from WADO-RS .../frames/N; thumbnails are rendered in
        // the browser from frames (no /rendered or /thumbnail requests).
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        // fuzzymatching=true: names match case- and diacritic-insensitively
        // ("nguyen" finds "Nguyễn"), which is what people type.
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        // A full DICOMweb server, not a static file tree.
        staticWado: false,
        // Accept: multipart/related; type=application/octet-stream; transfer-syntax=*
        // (parameters unquoted).
        omitQuotationForMultipartRequest: true,
        bulkDataURI: {
          enabled: true,
          relativeResolution: 'studies',
        },
        // STOW-RS upload from the study list.
        dicomUploadEnabled: true,
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('DICOMweb request failed', error.status);
  },
};
