// Jest for the front-end logic, on the configuration @jupyterlab/testutils provides.
const baseConfig = require('@jupyterlab/testutils/lib/jest-config')(__dirname);

module.exports = {
  ...baseConfig,
  reporters: ['default'],
  testRegex: 'test/.*\\.spec\\.ts$'
};
