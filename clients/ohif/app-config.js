/** OHIF v3 configuration for a static-dicomweb site.
 *
 * One DICOMweb data source whose QIDO-RS and WADO-RS root is the site root R (the URL that
 * `static-dicomweb serve DIR` prints, or the S3/CloudFront URL of the site's prefix).
 * serve_ohif.py replaces __DICOMWEB_ROOT__ with that URL (no trailing slash) when it serves
 * this file as /app-config.js; to deploy by hand, copy this file over the build's
 * app-config.js and put the URL in.
 */
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  // the "investigational use only" modal would cover the study list on every fresh browser
  investigationalUseDialog: { option: 'never' },
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: true,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'static-dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'static-dicomweb',
      configuration: {
        friendlyName: 'static-dicomweb site',
        name: 'static-dicomweb',
        qidoRoot: '__DICOMWEB_ROOT__',
        wadoRoot: '__DICOMWEB_ROOT__',
        wadoUriRoot: '__DICOMWEB_ROOT__',
        // a static host answers every QIDO query with the whole index: OHIF filters on its side
        staticWado: true,
        qidoSupportsIncludeField: false,
        supportsFuzzyMatching: false,
        supportsWildcard: false,
        supportsReject: false,
        supportsStow: false,
        // pixels come from .../instances/{I}/frames/{n}; thumbnails are rendered from frames too
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        // Accept headers without quotes: a CORS-safelisted value, so no preflight per frame
        omitQuotationForMultipartRequest: true,
        // the site's BulkDataURIs are relative to the series URL R/studies/{S}/series/{SE}/
        // (instances/{I}/frames/1, instances/{I}/bulkdata/7fe00010): PS3.18's own convention
        bulkDataURI: {
          enabled: true,
          relativeResolution: 'series',
        },
      },
    },
  ],
};
